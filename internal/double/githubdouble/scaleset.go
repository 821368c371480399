package githubdouble

// The runner scale set service, as github.com/actions/scaleset's client
// speaks it: a registration token (REST) is exchanged at
// /actions/runner-registration for an admin connection (the Actions
// service URL and a JWT), with which the client manages runner groups,
// scale sets, message sessions and JIT runners under that URL; a session's
// message queue is long-polled with the session's own token.
//
// Where neither the client's README, its code nor ARC's documentation
// says what the service does, the double guesses, and says so here:
//   - The Actions service lives on the double's own host, under
//     prefix + "/_actions/"; the admin JWT is unsigned (the client only
//     reads its exp claim) and is refused once expired (401).
//   - Assignment: a queued job goes to one scale set of a covering scope
//     whose labels all the job's labels are among (case-insensitively),
//     that has a live session and whose assigned, unfinished jobs are
//     fewer than the maxCapacity of its last poll; among those, the one
//     with the fewest assigned jobs (then the lowest id). Jobs are
//     assigned when queued, when a poll raises capacity and when a job
//     ends. An assigned job is taken only by a runner of its scale set,
//     and a plain runner never takes one.
//   - A session not polled for Options.SessionIdle (default 2 minutes) is
//     dropped, as a crashed listener's is eventually; until then a new
//     session for the scale set is refused with 409
//     RunnerScaleSetSessionConflictException.
//   - A message is the job messages pending when it is read (at most 50)
//     with the statistics of that moment; it is delivered again until
//     deleted or until a later lastMessageId is given.
//   - Statistics: TotalAssignedJobs counts the scale set's assigned jobs
//     not completed (queued or running), TotalRunningJobs the running
//     ones; TotalAvailableJobs and TotalAcquiredJobs stay 0.
//   - Deleting a scale set puts its jobs not yet started back in the
//     queue and removes its idle runners.
//   - A scale set's runners are also the scope's self-hosted runners in
//     the REST API (listed, deleted there), in the scale set's group.

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"
)

// scaleSet is one runner scale set.
type scaleSet struct {
	id          int64
	name        string
	scope       scopeKey
	group       int64
	groupName   string
	labels      []string
	maxCapacity int
	session     *ssSession
}

// ssSession is a scale set's message session.
type ssSession struct {
	id, owner    string
	token        string
	tokenExpires time.Time
	lastPoll     time.Time
	outbox       []map[string]any
	unacked      *ssMessage
}

type ssMessage struct {
	id   int64
	body []map[string]any
}

// adminToken is an Actions service admin JWT: it acts within one scope.
type adminToken struct {
	scope   scopeKey
	expires time.Time
}

// regToken is a runner registration token handed out by the REST API.
type regToken struct {
	scope   scopeKey
	expires time.Time
}

// scaleSetState is the double's scale-set service; guarded by d.mu.
type scaleSetState struct {
	sets      map[int64]*scaleSet
	admin     map[string]adminToken
	reg       map[string]regToken
	fail5xx   int // next calls answer 500
	loseNext  int // next calls act, then lose their answer
	faultsHit map[string]int
	base      string // the double's URL with the prefix, as last reached
}

func (st *scaleSetState) init() {
	if st.sets == nil {
		st.sets, st.admin, st.reg, st.faultsHit = map[int64]*scaleSet{}, map[string]adminToken{}, map[string]regToken{}, map[string]int{}
	}
}

func (d *Double) adminTTL() time.Duration {
	if d.o.AdminTokenTTL > 0 {
		return d.o.AdminTokenTTL
	}
	return time.Hour
}

func (d *Double) sessionIdle() time.Duration {
	if d.o.SessionIdle > 0 {
		return d.o.SessionIdle
	}
	return 2 * time.Minute
}

func (d *Double) messageWait() time.Duration {
	if d.o.MessageWait > 0 {
		return d.o.MessageWait
	}
	return 50 * time.Second
}

// rememberRegToken keeps a registration token the REST API handed out.
// Callers hold d.mu.
func (d *Double) rememberRegToken(tok string, s scopeKey, exp time.Time) {
	d.ss.init()
	d.ss.reg[tok] = regToken{scope: s, expires: exp}
}

// FailScaleSetCalls makes the next n calls to the Actions service (admin
// connection, scale sets, sessions, messages, JIT) answer 500.
func (d *Double) FailScaleSetCalls(n int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.ss.init()
	d.ss.fail5xx = n
}

// LoseScaleSetAnswers makes the next n calls to the Actions service act,
// then drop the connection without an answer.
func (d *Double) LoseScaleSetAnswers(n int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.ss.init()
	d.ss.loseNext = n
}

// ExpireAdminTokens makes every admin token handed out so far expired
// before its time (as if revoked): the service answers 401 to it.
func (d *Double) ExpireAdminTokens() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.ss.init()
	for k, t := range d.ss.admin {
		t.expires = time.Now().Add(-time.Second)
		d.ss.admin[k] = t
	}
}

// ExpireMessageTokens makes every session's message-queue token
// expired: its next poll is answered 401, and the client refreshes the
// session.
func (d *Double) ExpireMessageTokens() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.ss.init()
	for _, s := range d.ss.sets {
		if s.session != nil {
			s.session.tokenExpires = time.Now().Add(-time.Second)
		}
	}
	d.notify()
}

// ScaleSetFaults counts the injected faults served: "500", "lost".
func (d *Double) ScaleSetFaults() map[string]int {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.ss.init()
	out := map[string]int{}
	for k, v := range d.ss.faultsHit {
		out[k] = v
	}
	return out
}

// ScaleSet is a scale set as the double holds it.
type ScaleSet struct {
	ID          int64
	Name        string
	Scope       string
	Group       int64
	Labels      []string
	MaxCapacity int
	Session     bool // a live session holds it
	Assigned    int  // assigned jobs not completed
}

// ScaleSets lists the scale sets by id.
func (d *Double) ScaleSets() []ScaleSet {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.ss.init()
	var out []ScaleSet
	for _, s := range d.sortedSets() {
		out = append(out, ScaleSet{ID: s.id, Name: s.name, Scope: s.scope.kind + ":" + s.scope.name, Group: s.group,
			Labels: append([]string(nil), s.labels...), MaxCapacity: s.maxCapacity, Session: d.liveSession(s) != nil,
			Assigned: d.ssStats(s)["totalAssignedJobs"]})
	}
	return out
}

// JobScaleSet is the scale set a job was (last) assigned to; 0 if none.
func (d *Double) JobScaleSet(jobID int64) int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	if j := d.jobs[jobID]; j != nil {
		return j.everSet
	}
	return 0
}

func (d *Double) sortedSets() []*scaleSet {
	out := make([]*scaleSet, 0, len(d.ss.sets))
	for _, s := range d.ss.sets {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].id < out[j].id })
	return out
}

// liveSession is s's session, dropped first if it went idle too long.
// Callers hold d.mu.
func (d *Double) liveSession(s *scaleSet) *ssSession {
	if s.session != nil && time.Since(s.session.lastPoll) > d.sessionIdle() {
		d.logf("scale set %s: session %s idle, dropped", s.name, s.session.id)
		s.session = nil
	}
	return s.session
}

// serveActions serves the admin connection and the Actions service;
// path is below the API prefix.
func (d *Double) serveActions(w http.ResponseWriter, r *http.Request, path string) {
	d.mu.Lock()
	d.ss.init()
	d.calls["scaleset "+r.Method+" "+opName(path)]++
	d.ss.base = d.base(r)
	if d.ss.fail5xx > 0 {
		d.ss.fail5xx--
		d.ss.faultsHit["500"]++
		d.mu.Unlock()
		d.logf("fault: 500 for %s %s", r.Method, path)
		writeJSON(w, http.StatusInternalServerError, map[string]any{"message": "injected"})
		return
	}
	lose := d.ss.loseNext > 0
	if lose {
		d.ss.loseNext--
		d.ss.faultsHit["lost"]++
	}
	d.mu.Unlock()
	var body []byte
	if r.Body != nil {
		body, _ = readAll(r)
	}
	status, out := d.actionsCall(r, path, body)
	if lose {
		d.logf("fault: answer of %s %s lost", r.Method, path)
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				_ = conn.Close()
				return
			}
		}
		panic(http.ErrAbortHandler)
	}
	if out == nil {
		w.WriteHeader(status)
		return
	}
	writeJSON(w, status, out)
}

// opName is path with its numbers and ids made generic, for call counts.
func opName(path string) string {
	parts := strings.Split(strings.Trim(path, "/"), "/")
	for i, p := range parts {
		if _, err := strconv.Atoi(p); err == nil || len(p) == 36 {
			parts[i] = "{id}"
		}
	}
	return strings.Join(parts, "/")
}

func readAll(r *http.Request) ([]byte, error) {
	defer r.Body.Close()
	var b strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := r.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			return []byte(b.String()), nil
		}
	}
}

func exception(name, msg string) map[string]any {
	return map[string]any{"typeName": "GitHub.DistributedTask.WebApi." + name, "message": msg}
}

// actionsCall routes one call of the Actions service.
func (d *Double) actionsCall(r *http.Request, path string, body []byte) (int, any) {
	if path == "/actions/runner-registration" {
		return d.runnerRegistration(r, body)
	}
	rest, ok := strings.CutPrefix(path, "/_actions/")
	if !ok {
		return http.StatusNotFound, notFound
	}
	if q, ok := strings.CutPrefix(rest, "_msgqueue/"); ok {
		return d.messageQueue(r, q)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	auth, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	at, known := d.ss.admin[auth]
	if !ok || !known || time.Now().After(at.expires) {
		return http.StatusUnauthorized, exception("VssUnauthorizedException", "admin token missing or expired")
	}
	var in map[string]any
	if len(body) > 0 {
		if err := json.Unmarshal(body, &in); err != nil {
			return http.StatusBadRequest, exception("ArgumentException", "bad JSON")
		}
	}
	parts := strings.Split(strings.Trim(rest, "/"), "/")
	q := r.URL.Query()
	switch {
	case len(parts) == 3 && parts[0] == "_apis" && parts[1] == "runtime" && parts[2] == "runnergroups" && r.Method == http.MethodGet:
		return d.ssGroups(at.scope, q.Get("groupName"))
	case len(parts) >= 3 && parts[0] == "_apis" && parts[1] == "runtime" && parts[2] == "runnerscalesets":
		return d.ssScaleSets(r.Method, at.scope, parts[3:], q, in)
	case len(parts) >= 5 && strings.Join(parts[:5], "/") == "_apis/distributedtask/pools/0/agents":
		return d.ssAgents(r.Method, at.scope, parts[5:], q)
	}
	return http.StatusNotFound, exception("NotFoundException", "no such API: "+rest)
}

// runnerRegistration exchanges a registration token for an admin
// connection of the token's scope.
func (d *Double) runnerRegistration(r *http.Request, body []byte) (int, any) {
	if r.Method != http.MethodPost {
		return http.StatusNotFound, notFound
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "RemoteAuth ")
	rt, known := d.ss.reg[tok]
	if !ok || !known || time.Now().After(rt.expires) {
		return http.StatusUnauthorized, basicError("Bad credentials")
	}
	var in struct {
		URL         string `json:"url"`
		RunnerEvent string `json:"runner_event"`
	}
	if err := json.Unmarshal(body, &in); err != nil || in.RunnerEvent != "register" {
		return http.StatusBadRequest, basicError("Problems parsing JSON")
	}
	if s, ok := scopeOfConfigURL(in.URL); !ok || s != rt.scope {
		return http.StatusForbidden, basicError("the registration token is not for " + in.URL)
	}
	exp := time.Now().Add(d.adminTTL())
	jwt := unsignedJWT(exp)
	d.ss.admin[jwt] = adminToken{scope: rt.scope, expires: exp}
	return http.StatusCreated, map[string]any{"url": d.base(r) + "/_actions/", "token": jwt, "token_schema": "OAuthAccessToken"}
}

// base is the double's own URL with the API prefix, as r reached it.
func (d *Double) base(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host + d.o.Prefix
}

// scopeOfConfigURL is the scope a config URL (https://HOST/ORG,
// /OWNER/REPO or /enterprises/SLUG) names.
func scopeOfConfigURL(u string) (scopeKey, bool) {
	_, rest, ok := strings.Cut(u, "://")
	if !ok {
		return scopeKey{}, false
	}
	_, path, _ := strings.Cut(rest, "/")
	parts := strings.Split(strings.Trim(strings.ToLower(path), "/"), "/")
	switch {
	case len(parts) == 1 && parts[0] != "":
		return scopeKey{"org", parts[0]}, true
	case len(parts) == 2 && parts[0] == "enterprises":
		return scopeKey{"enterprise", parts[1]}, true
	case len(parts) == 2:
		return scopeKey{"repo", parts[0] + "/" + parts[1]}, true
	}
	return scopeKey{}, false
}

func unsignedJWT(exp time.Time) string {
	enc := base64.RawURLEncoding.EncodeToString
	h, _ := json.Marshal(map[string]any{"alg": "HS256", "typ": "JWT"})
	c, _ := json.Marshal(map[string]any{"exp": exp.Unix(), "iat": time.Now().Unix(), "jti": randomHex(8)})
	return enc(h) + "." + enc(c) + "." + enc([]byte(randomHex(16)))
}

func (d *Double) ssGroupsOf(s scopeKey) []*group {
	if s.kind == "org" {
		return d.orgGroups(s.name)
	}
	return []*group{{id: 1, name: "Default"}}
}

func (d *Double) ssGroups(s scopeKey, name string) (int, any) {
	var out []any
	for _, g := range d.ssGroupsOf(s) {
		if strings.EqualFold(g.name, name) {
			out = append(out, map[string]any{"id": g.id, "name": g.name, "size": 0, "isDefaultGroup": g.id == 1})
		}
	}
	return http.StatusOK, map[string]any{"count": len(out), "value": nonNil(out)}
}
