// Package gitlabdouble is a GitLab double for tests: the REST endpoints the
// fireactions GitLab driver uses (runner creation and removal, runner and
// job listings, projects and groups) and the runner job protocol a
// gitlab-runner speaks (verify, request a job, update it, append to its
// log), shaped as GitLab documents them, the admin GraphQL jobs query,
// and projects' Git repositories over smart HTTP (InitRepo; git
// http-backend) for the job token. It can also deliver Job Hook webhooks
// and inject faults (error statuses, delays, rate limits).
//
// GitLab itself cannot run on the machines this project is tested on; the
// double holds the driver to GitLab's published API instead.
package gitlabdouble

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Server is the GitLab double. Create it with New; it is safe for
// concurrent use.
type Server struct {
	mu        sync.Mutex
	grants    map[string]Grant // access tokens management calls may carry
	groups    map[int64]*Group
	projects  map[int64]*Project
	runners   map[int64]*Runner
	jobs      map[int64]*Job
	nextID    int64
	faults    []*Fault
	calls     []string
	issued    []string            // every runner and job token ever issued
	deleted   map[int64]time.Time // runner id -> when it was deleted
	hook      *hookTarget
	reposDir  string           // where InitRepo put the repositories
	repoHeads map[int64]string // project id -> its main's commit

	// ExternalURL is the double's base URL as runners reach it, for the
	// repo_url of their jobs; default http://gitlab.invalid.
	ExternalURL string
	// TokenLifetime is how long runner tokens live (zero: no expiry).
	TokenLifetime time.Duration
	// Now is the double's clock.
	Now func() time.Time
}

// Group is a GitLab group.
type Group struct {
	ID       int64
	FullPath string
}

// Project is a GitLab project in a group.
type Project struct {
	ID           int64
	FullPath     string
	GroupID      int64
	LastActivity time.Time
	// BuildsDisabled is builds_access_level "disabled" (CI/CD turned
	// off): GitLab's ProjectPolicy then prevents read_build, so the
	// Jobs API answers 403 to everyone, administrators included.
	BuildsDisabled bool
	// SharedRunnersOff and GroupRunnersOff are the project's
	// shared_runners_enabled and group_runners_enabled set to false
	// (Settings > CI/CD > Runners): GitLab then gives its jobs to no
	// instance runner, or to no group runner.
	SharedRunnersOff, GroupRunnersOff bool
	// SharedWith are the groups the project is shared with (Project
	// information > Members > Invite a group): GitLab lists it among
	// theirs unless with_shared=false, but their group runners do not
	// serve it.
	SharedWith []int64
	// Protected are the project's protected branches, each with the
	// least role allowed to push or merge to it (NoOne: no one), an
	// administrator's token going by its Grant.Role like any other.
	// GitLab protects the default branch, main here, for Maintainers;
	// a job of a protected branch is updated (cancelled) only by a user
	// who may update the branch (Ci::BuildPolicy's protected_ref).
	Protected map[string]Role
}

// Runner is a runner created through POST /user/runners.
type Runner struct {
	ID             int64
	Type           string // instance_type, group_type or project_type
	GroupID        int64
	ProjectID      int64
	Description    string
	Tags           []string
	RunUntagged    bool
	Locked         bool
	Paused         bool
	AccessLevel    string
	MaximumTimeout int64
	Token          string
	TokenExpiresAt *time.Time
	Contacted      bool
	JobsTaken      int
}

// Job is a CI job.
type Job struct {
	ID        int64
	ProjectID int64
	Name      string
	Stage     string
	Ref       string
	Tags      []string
	Script    []string
	Protected bool
	SHA       string // the commit it builds (its project's main when it has a repository)
	Status    string // created, pending, running, canceling, success, failed, canceled
	Token     string // the job token, while the job runs
	RunnerID  int64
	// Graceful: the runner that took it announced the cancel_gracefully
	// feature, so a cancel leaves it canceling for the runner to end.
	Graceful bool
	// WrongCloneToken: the test made its repo_url carry a token that is
	// not the job's (see BreakCloneToken).
	WrongCloneToken bool
	Trace           []byte
	ExitCode        int
	CreatedAt       time.Time
	StartedAt       time.Time
	EndedAt         time.Time
}

// New returns a double that accepts token on its management endpoints,
// as an administrator's token with every scope (see AddToken for others).
func New(token string) *Server {
	return &Server{
		grants: map[string]Grant{token: fullGrant}, groups: map[int64]*Group{}, projects: map[int64]*Project{},
		runners: map[int64]*Runner{}, jobs: map[int64]*Job{}, deleted: map[int64]time.Time{}, Now: time.Now,
		repoHeads: map[int64]string{},
	}
}

// AddGroup adds a group (and its parent groups) and returns its ID.
func (s *Server) AddGroup(fullPath string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addGroupLocked(fullPath)
}

func (s *Server) addGroupLocked(fullPath string) int64 {
	for _, g := range s.groups {
		if g.FullPath == fullPath {
			return g.ID
		}
	}
	if i := strings.LastIndex(fullPath, "/"); i > 0 {
		s.addGroupLocked(fullPath[:i])
	}
	s.nextID++
	s.groups[s.nextID] = &Group{ID: s.nextID, FullPath: fullPath}
	return s.nextID
}

// AddProject adds a project (and its groups) and returns its ID.
func (s *Server) AddProject(fullPath string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	ns := fullPath[:max(strings.LastIndex(fullPath, "/"), 0)]
	gid := s.addGroupLocked(ns)
	s.nextID++
	s.projects[s.nextID] = &Project{ID: s.nextID, FullPath: fullPath, GroupID: gid, LastActivity: s.Now(),
		Protected: map[string]Role{"main": Maintainer}}
	return s.nextID
}

// setProject changes the project at projectPath under the lock; a test
// naming a project the double lacks is a bug in the test (panic, naming
// op).
func (s *Server) setProject(projectPath, op string, set func(*Project)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.projectByPathLocked(projectPath)
	if p == nil {
		panic("gitlabdouble: " + op + ": unknown project " + projectPath)
	}
	set(p)
}

// Protect protects a branch of the project: only role and above may push
// or merge to it (NoOne: no member), as Settings > Repository > Protected
// branches sets it. Unprotect lifts it.
func (s *Server) Protect(projectPath, branch string, role Role) {
	s.setProject(projectPath, "Protect", func(p *Project) { p.Protected[branch] = role })
}

// Unprotect lifts a branch's protection (see Protect).
func (s *Server) Unprotect(projectPath, branch string) {
	s.setProject(projectPath, "Unprotect", func(p *Project) { delete(p.Protected, branch) })
}

// DisableBuilds turns CI/CD off in the project (builds_access_level
// disabled), as its Settings > General > Visibility page does.
func (s *Server) DisableBuilds(projectPath string) {
	s.setProject(projectPath, "DisableBuilds", func(p *Project) { p.BuildsDisabled = true })
}

// TurnOffRunners turns off the project's instance runners (shared) and/or
// group runners, as its Settings > CI/CD > Runners toggles do.
func (s *Server) TurnOffRunners(projectPath string, shared, group bool) {
	s.setProject(projectPath, "TurnOffRunners", func(p *Project) { p.SharedRunnersOff, p.GroupRunnersOff = shared, group })
}

// ShareProject shares the project with a group (adding the group if
// needed), as Members > Invite a group does.
func (s *Server) ShareProject(projectPath, groupPath string) {
	s.setProject(projectPath, "ShareProject", func(p *Project) { p.SharedWith = append(p.SharedWith, s.addGroupLocked(groupPath)) })
}

// AddJob queues a pending job in the project and returns its ID. Script
// lines are what a runner executes.
func (s *Server) AddJob(projectPath, name string, tags []string, script ...string) int64 {
	s.mu.Lock()
	p := s.projectByPathLocked(projectPath)
	if p == nil {
		s.mu.Unlock()
		panic("gitlabdouble: AddJob: unknown project " + projectPath)
	}
	s.nextID++
	j := &Job{
		ID: s.nextID, ProjectID: p.ID, Name: name, Stage: "test", Ref: "main",
		Tags: append([]string(nil), tags...), Script: script, Status: "pending", CreatedAt: s.Now(),
		SHA: s.repoHeads[p.ID],
	}
	s.jobs[j.ID] = j
	p.LastActivity = s.Now()
	repo := ""
	if j.SHA != "" {
		repo = filepath.Join(s.reposDir, p.FullPath+".git")
	}
	s.mu.Unlock()
	if repo != "" {
		// GitLab keeps each pipeline's commit at refs/pipelines/<id>
		// (its persistent ref) and sends a refspec for it; a job's
		// pipeline is the job here.
		if err := writePipelineRef(repo, j.ID, j.SHA); err != nil {
			panic("gitlabdouble: AddJob: " + err.Error())
		}
	}
	s.deliver(j.ID)
	return j.ID
}

// BreakCloneToken makes the job's git_info.repo_url carry a token that is
// not its job token, so that its clone is refused: the positive control
// of a test that a job fetches its sources with its own token.
func (s *Server) BreakCloneToken(id int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if j := s.jobs[id]; j != nil {
		j.WrongCloneToken = true
	}
}

// SetJobStatus changes a job's status as GitLab would (a cancel, say).
func (s *Server) SetJobStatus(id int64, status string) {
	s.mu.Lock()
	if j := s.jobs[id]; j != nil {
		j.Status = status
	}
	s.mu.Unlock()
	s.deliver(id)
}

// Jobs returns a copy of every job, by ID.
func (s *Server) Jobs() map[int64]Job {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[int64]Job{}
	for id, j := range s.jobs {
		c := *j
		c.Trace = append([]byte(nil), j.Trace...)
		out[id] = c
	}
	return out
}

// Runners returns a copy of every runner, by ID.
func (s *Server) Runners() map[int64]Runner {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[int64]Runner{}
	for id, r := range s.runners {
		out[id] = *r
	}
	return out
}

// Deleted returns when each deleted runner was deleted, by ID.
func (s *Server) Deleted() map[int64]time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[int64]time.Time{}
	for id, at := range s.deleted {
		out[id] = at
	}
	return out
}

// IssuedTokens returns every runner and job token the double handed out,
// for tests that check secrets stay where they belong.
func (s *Server) IssuedTokens() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.issued...)
}

// Calls returns "METHOD /api/v4/path" for every request served.
func (s *Server) Calls() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.calls...)
}

// Fault makes matching requests fail. A fault with Times > 0 applies that
// many times, then no more; Times 0 applies until removed.
type Fault struct {
	Method string // "" matches any
	Path   string // matches a request path (under /api/v4) equal to or starting with it
	// Status is the answer (e.g. 500, 502, 429); 0 answers normally
	// after Delay.
	Status int
	// Delay holds the answer back, for client timeouts.
	Delay time.Duration
	// After serves the request first and then fails it: the effect
	// happens but the client sees only the failure, as when a response
	// is lost.
	After bool
	Times int

	hits int
}

// Inject adds a fault; the returned function removes it.
func (s *Server) Inject(f Fault) (remove func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fp := &f
	s.faults = append(s.faults, fp)
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		for i, x := range s.faults {
			if x == fp {
				s.faults = append(s.faults[:i], s.faults[i+1:]...)
				return
			}
		}
	}
}

// Hits reports how many requests a fault has affected so far.
func (s *Server) Hits(path string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, f := range s.faults {
		if f.Path == path {
			n += f.hits
		}
	}
	return n
}

// fault returns the fault for a request, counting it.
func (s *Server) fault(method, path string) *Fault {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range s.faults {
		if (f.Method == "" || f.Method == method) && strings.HasPrefix(path, f.Path) &&
			(f.Times == 0 || f.hits < f.Times) {
			f.hits++
			c := *f
			return &c
		}
	}
	return nil
}

// Handler serves the double's API under /api/v4, and its GraphQL API
// at /api/graphql.
func (s *Server) Handler() http.Handler {
	return http.HandlerFunc(s.serve)
}

const apiPrefix = "/api/v4"

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	raw := r.URL.EscapedPath()
	if raw == "/api/graphql" {
		s.serveGraphQL(w, r)
		return
	}
	if project, rest, ok := gitPath(r.URL.Path); ok {
		s.serveGit(w, r, project, rest)
		return
	}
	if !strings.HasPrefix(raw, apiPrefix+"/") {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "404 Not Found"})
		return
	}
	var segs []string
	for _, seg := range strings.Split(strings.TrimPrefix(raw, apiPrefix+"/"), "/") {
		u, err := url.PathUnescape(seg)
		if err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "bad path"})
			return
		}
		segs = append(segs, u)
	}
	path := "/" + strings.Join(segs, "/")
	s.mu.Lock()
	s.calls = append(s.calls, r.Method+" "+apiPrefix+path)
	s.mu.Unlock()

	f := s.fault(r.Method, path)
	if f != nil && f.Delay > 0 {
		select {
		case <-time.After(f.Delay):
		case <-r.Context().Done():
			if !f.After {
				return
			}
		}
	}
	if f != nil && f.Status != 0 && !f.After {
		failWith(w, f.Status)
		return
	}
	if f != nil && f.After {
		// Serve into a discarded response, then answer with the fault.
		s.route(discard{h: http.Header{}}, r, segs)
		if f.Status != 0 {
			failWith(w, f.Status)
		}
		return
	}
	s.route(w, r, segs)
}

func failWith(w http.ResponseWriter, status int) {
	if status == http.StatusTooManyRequests {
		w.Header().Set("Retry-After", "1")
		w.Header().Set("RateLimit-Reset", "0")
		writeJSON(w, status, map[string]string{"message": "Retry later"})
		return
	}
	writeJSON(w, status, map[string]string{"message": http.StatusText(status)})
}

// route dispatches a request by its unescaped path segments.
func (s *Server) route(w http.ResponseWriter, r *http.Request, p []string) {
	m := r.Method
	switch {
	// The runner job protocol authenticates with runner and job tokens.
	case m == http.MethodPost && match(p, "runners", "verify"):
		s.verifyRunner(w, r)
	case m == http.MethodPost && match(p, "jobs", "request"):
		s.requestJob(w, r)
	case m == http.MethodPut && match(p, "jobs", "*"):
		s.updateJob(w, r, p[1])
	case m == http.MethodPatch && match(p, "jobs", "*", "trace"):
		s.patchTrace(w, r, p[1])
	case m == http.MethodDelete && match(p, "runners"):
		s.deleteRunnerByToken(w, r)
	default:
		s.routeManagement(w, r, p)
	}
}

// routeManagement dispatches the calls made with an access token.
func (s *Server) routeManagement(w http.ResponseWriter, r *http.Request, p []string) {
	m := r.Method
	g, ok := s.grant(r)
	switch {
	case !ok:
		writeJSON(w, http.StatusUnauthorized, map[string]string{"message": "401 Unauthorized"})
	// Every call needs a scope that allows it: reads read_api or api,
	// runner creation create_runner, runner deletion manage_runner (or
	// api for both), anything else api.
	case m == http.MethodGet && !g.can("api", "read_api"),
		m == http.MethodPost && match(p, "user", "runners") && !g.can("api", "create_runner"),
		m == http.MethodDelete && match(p, "runners", "*") && !g.can("api", "manage_runner"),
		m != http.MethodGet && !match(p, "user", "runners") && !match(p, "runners", "*") && !g.can("api"):
		insufficientScope(w)

	// Endpoints held to their documented scopes and roles.
	case m == http.MethodGet && match(p, "runners", "*", "jobs"):
		s.listRunnerJobs(w, r, g, p[1])
	case m == http.MethodPost && match(p, "projects", "*", "jobs", "*", "cancel"):
		s.cancelJob(w, r, g, p[1], p[3])

	case m == http.MethodPost && match(p, "user", "runners"):
		s.createRunner(w, r, g)
	case m == http.MethodDelete && match(p, "runners", "*"):
		s.deleteRunner(w, g, p[1])
	case m == http.MethodGet && match(p, "runners", "all"):
		if !g.Admin { // authenticated_as_admin!
			forbidden(w)
			return
		}
		s.listRunners(w, r, func(x *Runner) bool { return true })
	case m == http.MethodGet && match(p, "projects"):
		s.listProjects(w, r, func(*Project) bool { return true })
	case m == http.MethodGet && match(p, "projects", "*"):
		s.getProject(w, r, p[1])
	case m == http.MethodGet && match(p, "projects", "*", "runners"):
		s.listScopeRunners(w, r, g, "project", p[1])
	case m == http.MethodGet && match(p, "projects", "*", "jobs"):
		s.listJobs(w, r, p[1])
	case m == http.MethodGet && match(p, "projects", "*", "jobs", "*"):
		s.getJob(w, p[1], p[3])
	case m == http.MethodGet && match(p, "user"):
		s.currentUser(w, g)
	case m == http.MethodGet && match(p, "groups", "*"):
		s.getGroup(w, p[1])
	case m == http.MethodGet && match(p, "groups", "*", "projects"):
		s.listGroupProjects(w, r, p[1])
	case m == http.MethodGet && match(p, "groups", "*", "runners"):
		s.listScopeRunners(w, r, g, "group", p[1])
	default:
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "404 Not Found"})
	}
}

// match reports whether path segments p equal pattern, "*" matching any
// one segment.
func match(p []string, pattern ...string) bool {
	if len(p) != len(pattern) {
		return false
	}
	for i := range p {
		if pattern[i] != "*" && pattern[i] != p[i] {
			return false
		}
	}
	return true
}

// newToken issues a random token with GitLab's prefix for its kind.
func (s *Server) newToken(prefix string) string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	t := prefix + hex.EncodeToString(b[:])
	s.issued = append(s.issued, t)
	return t
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// discard is a ResponseWriter that drops everything.
type discard struct{ h http.Header }

func (d discard) Header() http.Header         { return d.h }
func (d discard) Write(b []byte) (int, error) { return len(b), nil }
func (d discard) WriteHeader(int)             {}
