// Package forgejodouble is a stand-in for Forgejo's REST calls about
// runners and its runner registration, held to Forgejo's swagger
// (testdata/swagger-runners.json, the relevant part of Forgejo's own API
// description) and refusing what Forgejo refuses: no token, a token
// without the read scope of the route's category, an org or repo that
// does not exist (404, as Forgejo's orgAssignment and repoAssignment), a
// user who is not site admin, org owner or repo owner, a POST where
// Forgejo serves only GET. Every org and repo is public: the double does
// not model a private one's 404 to a user who cannot read it.
//
// Forgejo forked Gitea and kept its runner protocol (the connect service
// runner.v1.RunnerService under /api/actions; Forgejo's server imports
// Gitea's actions-proto-go), so the double serves Register of that
// protocol. Alone it serves no tasks; NewFront stands it in front of a
// real Gitea, whose runner protocol then runs real jobs.
package forgejodouble

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	runnerv1 "code.gitea.io/actions-proto-go/runner/v1"
	"code.gitea.io/actions-proto-go/runner/v1/runnerv1connect"
	"connectrpc.com/connect"

	"github.com/nixos-fireactions/nixos-fireactions/internal/double/giteadouble"
)

// Version is what /api/v1/version and /api/forgejo/v1/version answer.
const Version = "12.0.0+gitea-1.22.0"

// Token is an API token with its scopes and its user's rights.
type Token struct {
	Scopes    []string // "read:admin", "write:organization", …
	SiteAdmin bool
	OrgOwner  []string // orgs the user owns
	RepoOwner []string // "owner/repo" the user owns
}

// Job is a job of a run, as Forgejo's ActionRunJob.
type Job struct {
	ID     int64    `json:"id"`
	RepoID int64    `json:"repo_id"`
	Owner  string   `json:"-"` // org or user owning the repo
	Repo   string   `json:"-"` // "owner/repo"
	Name   string   `json:"name"`
	RunsOn []string `json:"runs_on"`
	Status string   `json:"status"` // waiting, running, success, …
}

// Double is one Forgejo.
type Double struct {
	runnerv1connect.UnimplementedRunnerServiceHandler

	mu       sync.Mutex
	tokens   map[string]Token
	regToken map[string]string // scope key → registration token
	regMade  int               // registration tokens made
	reset    map[string]bool   // registration tokens invalidated by a reset
	jobs     []Job
	runners  map[int64]*runner
	nextID   int64
	calls    []string
	legacy   bool
	up       *Upstream // nil: the double keeps its own jobs and runners
	regDelay time.Duration
	signIn   bool            // REQUIRE_SIGNIN_VIEW: no API call without a user
	orgs     map[string]bool // orgs that exist
	repos    map[string]bool // repos that exist, "owner/repo"
}

// runner is a registered runner and the scope whose token registered it.
type runner struct {
	scope, uuid, name, status string
	labels                    []string
}

// apiRunner is Forgejo's ActionRunner.
type apiRunner struct {
	ID     int64    `json:"id"`
	UUID   string   `json:"uuid"`
	Name   string   `json:"name"`
	Status string   `json:"status"`
	Labels []string `json:"labels"`
}

// New returns a current Forgejo (one with the runner API: runners listed
// and deleted) with these API tokens. The orgs and repos the tokens' users
// own exist; AddOrgs and AddRepos add others.
func New(tokens map[string]Token) *Double {
	d := &Double{tokens: tokens, regToken: map[string]string{}, reset: map[string]bool{}, runners: map[int64]*runner{},
		orgs: map[string]bool{}, repos: map[string]bool{}}
	for _, t := range tokens {
		d.AddOrgs(t.OrgOwner...)
		d.AddRepos(t.RepoOwner...)
	}
	return d
}

// AddOrgs makes orgs exist.
func (d *Double) AddOrgs(names ...string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, n := range names {
		d.orgs[n] = true
	}
}

// AddRepos makes repos ("owner/repo") exist.
func (d *Double) AddRepos(fullNames ...string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, n := range fullNames {
		d.repos[n] = true
	}
}

// NewV12 returns a Forgejo v12, before the runner API: registration
// tokens and job search only, the instance's under /admin/runners.
func NewV12(tokens map[string]Token) *Double {
	d := New(tokens)
	d.legacy = true
	return d
}

// SetJobs replaces the jobs Forgejo knows.
func (d *Double) SetJobs(jobs ...Job) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.jobs = append([]Job(nil), jobs...)
}

// SetRegisterDelay makes Register take that long before it creates the
// runner, finishing even if the caller gave up: a slow Forgejo whose
// answer the caller never gets.
func (d *Double) SetRegisterDelay(delay time.Duration) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.regDelay = delay
}

// RequireSignIn makes the double a Forgejo with [service]
// REQUIRE_SIGNIN_VIEW = true: its API middleware then answers every call
// without a signed-in user 403, the version endpoints' too.
func (d *Double) RequireSignIn() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.signIn = true
}

// ResetRegistrationTokens is an admin resetting every scope's
// registration token: Register refuses the old ones as invalidated, and
// the next GET of a scope's token makes a new one.
func (d *Double) ResetRegistrationTokens() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for key, tok := range d.regToken {
		d.reset[tok] = true
		delete(d.regToken, key)
	}
}

// Runners returns the registered runners' names by id.
func (d *Double) Runners() map[int64]string {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := map[int64]string{}
	for k, v := range d.runners {
		out[k] = v.name
	}
	return out
}

// Calls returns "METHOD path?query" of each REST call received.
func (d *Double) Calls() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.calls...)
}

// Handler serves the double.
func (d *Double) Handler() http.Handler {
	mux := http.NewServeMux()
	p, h := runnerv1connect.NewRunnerServiceHandler(d)
	if d.up == nil {
		mux.Handle("/api/actions"+p, http.StripPrefix("/api/actions", h))
	} else {
		// Registration is Forgejo's; the rest of the runner protocol
		// is Gitea's own.
		mux.Handle("/api/actions"+runnerv1connect.RunnerServiceRegisterProcedure, http.StripPrefix("/api/actions", h))
		mux.Handle("/api/actions/", d.up.proxy())
	}
	mux.HandleFunc("/api/forgejo/v1/version", d.version)
	mux.HandleFunc("/api/v1/version", d.version)
	for _, r := range routes {
		if d.served(r) {
			mux.HandleFunc(r.method+" /api/v1"+r.swagger, d.serve(r))
		}
	}
	return mux
}

func (d *Double) version(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	d.mu.Lock()
	_, signed := d.token(r)
	refused := d.signIn && !signed
	d.mu.Unlock()
	if refused {
		http.Error(w, `{"message":"Only signed in user is allowed to call APIs."}`, http.StatusForbidden)
		return
	}
	writeJSON(w, map[string]string{"version": Version})
}

// route is one operation of the swagger subset: the token scope category
// it needs and what it does.
type route struct {
	method   string
	swagger  string // path as in the swagger, under /api/v1
	category string // admin, organization, repository
	op       string // token, jobs, list, delete, get (the org or repo)
	legacy   bool   // served by Forgejo v12, before the runner API
	current  bool   // served by Forgejo with the runner API
}

// routes are the operations the double serves, by Forgejo version.
var routes = []route{
	{"GET", "/admin/runners/registration-token", "admin", "token", true, true},
	{"GET", "/admin/runners/jobs", "admin", "jobs", true, true},
	{"GET", "/admin/actions/runners/registration-token", "admin", "token", false, true},
	{"GET", "/admin/actions/runners/jobs", "admin", "jobs", false, true},
	{"GET", "/admin/actions/runners", "admin", "list", false, true},
	{"DELETE", "/admin/actions/runners/{runner_id}", "admin", "delete", false, true},
	{"GET", "/orgs/{org}/actions/runners/registration-token", "organization", "token", true, true},
	{"GET", "/orgs/{org}/actions/runners/jobs", "organization", "jobs", true, true},
	{"GET", "/orgs/{org}/actions/runners", "organization", "list", false, true},
	{"DELETE", "/orgs/{org}/actions/runners/{runner_id}", "organization", "delete", false, true},
	{"GET", "/repos/{owner}/{repo}/actions/runners/registration-token", "repository", "token", true, true},
	{"GET", "/repos/{owner}/{repo}/actions/runners/jobs", "repository", "jobs", true, true},
	{"GET", "/repos/{owner}/{repo}/actions/runners", "repository", "list", false, true},
	{"DELETE", "/repos/{owner}/{repo}/actions/runners/{runner_id}", "repository", "delete", false, true},
	{"GET", "/orgs/{org}", "organization", "get", true, true},
	{"GET", "/repos/{owner}/{repo}", "repository", "get", true, true},
}

// served reports whether this double's Forgejo version has the route.
func (d *Double) served(r route) bool {
	if d.legacy {
		return r.legacy
	}
	return r.current
}

func (d *Double) serve(rt route) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		d.mu.Lock()
		defer d.mu.Unlock()
		d.calls = append(d.calls, r.Method+" "+r.URL.RequestURI())
		// Forgejo's order: a token that is given but unknown fails
		// sign-in; the token's scope (tokenRequiresScopes); the org or
		// repo (orgAssignment, repoAssignment: 404); a token at all
		// (reqToken); the user's rights (reqChecker).
		tok, ok := d.token(r)
		if !ok && r.Header.Get("Authorization") != "" {
			http.Error(w, `{"message":"invalid username, password or token"}`, http.StatusUnauthorized)
			return
		}
		// A GET needs read:CATEGORY, anything else write:CATEGORY.
		need := "write:" + rt.category
		if rt.method == http.MethodGet {
			need = "read:" + rt.category
		}
		if ok && !hasScope(tok.Scopes, need) {
			http.Error(w, fmt.Sprintf(`{"message":"token does not have at least one of required scope(s): [%s]"}`, need), http.StatusForbidden)
			return
		}
		key, owner, repo, allowed, exists := "instance", "", "", tok.SiteAdmin, true
		switch rt.category {
		case "organization":
			owner = r.PathValue("org")
			key = "org:" + owner
			allowed = allowed || contains(tok.OrgOwner, owner)
			exists = d.orgs[owner]
		case "repository":
			owner, repo = r.PathValue("owner"), r.PathValue("owner")+"/"+r.PathValue("repo")
			key = "repo:" + repo
			allowed = allowed || contains(tok.RepoOwner, repo)
			exists = d.repos[repo]
		}
		if !exists {
			http.Error(w, `{"message":"The target couldn't be found."}`, http.StatusNotFound)
			return
		}
		if !ok && rt.op == "get" && d.signIn {
			http.Error(w, `{"message":"Only signed in user is allowed to call APIs."}`, http.StatusForbidden)
			return
		}
		if !ok && rt.op != "get" {
			http.Error(w, `{"message":"token is required"}`, http.StatusUnauthorized)
			return
		}
		if rt.op == "get" { // a public org or repo: anyone reads it
			if repo != "" {
				writeJSON(w, map[string]string{"full_name": repo})
			} else {
				writeJSON(w, map[string]string{"username": owner})
			}
			return
		}
		if !allowed {
			http.Error(w, `{"message":"user should be an owner or a site admin"}`, http.StatusForbidden)
			return
		}
		if d.up != nil && rt.op != "token" {
			if err := d.sync(r.Context()); err != nil {
				http.Error(w, err.Error(), http.StatusBadGateway)
				return
			}
		}
		switch rt.op {
		case "token":
			if d.regToken[key] == "" {
				d.regMade++
				d.regToken[key] = fmt.Sprintf("REG-%d-%s", d.regMade, strings.NewReplacer(":", "-", "/", "-").Replace(key))
			}
			writeJSON(w, map[string]string{"token": d.regToken[key]})
		case "jobs":
			writeJSON(w, d.searchJobs(r.URL.Query().Get("labels"), owner, repo))
		case "list":
			d.list(w, r, key)
		case "delete":
			var id int64
			if _, err := fmt.Sscan(r.PathValue("runner_id"), &id); err != nil {
				http.Error(w, `{"message":"invalid runner id"}`, http.StatusBadRequest)
				return
			}
			// Forgejo: a runner of another scope is "not found" (Editable).
			if run, ok := d.runners[id]; !ok || (key != "instance" && run.scope != key) {
				http.Error(w, `{"message":"runner not found"}`, http.StatusNotFound)
				return
			}
			if d.up != nil {
				if err := d.deleteUpstream(r.Context(), id); err != nil {
					http.Error(w, err.Error(), http.StatusBadGateway)
					return
				}
			}
			delete(d.runners, id)
			w.WriteHeader(http.StatusNoContent)
		}
	}
}

// list is ListRunners: the scope's runners (the instance: all), paged by
// page and limit, as a plain array with X-Total-Count.
func (d *Double) list(w http.ResponseWriter, r *http.Request, key string) {
	page, limit := intParam(r, "page", 1), intParam(r, "limit", 30)
	if limit > 50 { // Forgejo's default MaxResponseItems
		limit = 50
	}
	var ids []int64
	for id, run := range d.runners {
		if key == "instance" || run.scope == key {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	out := []apiRunner{}
	for i := (page - 1) * limit; i >= 0 && i < len(ids) && i < page*limit; i++ {
		run := d.runners[ids[i]]
		out = append(out, apiRunner{ID: ids[i], UUID: run.uuid, Name: run.name, Status: run.status, Labels: run.labels})
	}
	w.Header().Set("X-Total-Count", strconv.Itoa(len(ids)))
	writeJSON(w, out)
}

func intParam(r *http.Request, name string, def int) int {
	v, err := strconv.Atoi(r.URL.Query().Get(name))
	if err != nil || v < 1 {
		return def
	}
	return v
}

// searchJobs is Forgejo's GetActionRunJobs: waiting and running jobs of
// the scope whose runs-on labels are all among labels, as an array (null
// when none, as Forgejo's nil slice encodes).
func (d *Double) searchJobs(labels, owner, repo string) []Job {
	asked := map[string]bool{}
	for _, l := range strings.Split(strings.TrimSpace(labels), ",") {
		asked[l] = true
	}
	var out []Job
	for _, j := range d.jobs {
		if j.Status != "waiting" && j.Status != "running" {
			continue
		}
		if (repo != "" && j.Repo != repo) || (repo == "" && owner != "" && j.Owner != owner) {
			continue
		}
		runs := len(asked) > 0 && len(j.RunsOn) > 0
		for _, l := range j.RunsOn {
			runs = runs && asked[l]
		}
		if runs {
			out = append(out, j)
		}
	}
	return out
}

func (d *Double) token(r *http.Request) (Token, bool) {
	h := r.Header.Get("Authorization")
	for _, p := range []string{"token ", "Bearer "} {
		if v, ok := strings.CutPrefix(h, p); ok {
			t, ok := d.tokens[v]
			return t, ok
		}
	}
	return Token{}, false
}

// hasScope reports whether scopes grant need ("read:admin", …): all,
// the scope itself, or write: where read: is needed.
func hasScope(scopes []string, need string) bool {
	write := strings.Replace(need, "read:", "write:", 1)
	for _, s := range scopes {
		if s == "all" || s == need || s == write {
			return true
		}
	}
	return false
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json;charset=utf-8")
	_ = json.NewEncoder(w).Encode(v)
}

// Register is the runner protocol's Register: a registration token of
// any scope creates a runner of that scope. Forgejo keeps no ephemeral
// flag: the runner stays until deleted.
func (d *Double) Register(ctx context.Context, req *connect.Request[runnerv1.RegisterRequest]) (*connect.Response[runnerv1.RegisterResponse], error) {
	giteadouble.LockAfterDelay(&d.mu, &d.regDelay)
	defer d.mu.Unlock()
	// Forgejo refuses each with InvalidArgument
	// (routers/api/actions/runner.Register).
	if req.Msg.Token == "" || req.Msg.Name == "" {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("missing runner token, name"))
	}
	scope := ""
	for k, t := range d.regToken {
		if t != "" && t == req.Msg.Token {
			scope = k
		}
	}
	switch {
	case d.reset[req.Msg.Token]:
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("runner registration token has been invalidated, please use the latest one"))
	case scope == "":
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("runner registration token not found"))
	}
	if d.up != nil {
		reg, err := d.registerUpstream(ctx, req.Msg)
		if err != nil {
			return nil, connect.NewError(connect.CodeUnavailable, err)
		}
		d.runners[reg.GetId()] = &runner{scope: scope, uuid: reg.GetUuid(), name: reg.GetName(), status: "offline", labels: req.Msg.Labels}
		return connect.NewResponse(&runnerv1.RegisterResponse{Runner: reg}), nil
	}
	d.nextID++
	d.runners[d.nextID] = &runner{scope: scope, uuid: fmt.Sprintf("uuid-%d", d.nextID), name: req.Msg.Name, status: "offline", labels: req.Msg.Labels}
	return connect.NewResponse(&runnerv1.RegisterResponse{Runner: &runnerv1.Runner{
		Id: d.nextID, Uuid: fmt.Sprintf("uuid-%d", d.nextID), Token: fmt.Sprintf("RUNNER-OWN-TOKEN-%d", d.nextID),
		Name: req.Msg.Name, Labels: req.Msg.Labels,
	}}), nil
}
