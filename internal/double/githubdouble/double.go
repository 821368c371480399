// Package githubdouble is a stand-in for GitHub's REST API (api.github.com
// or a GitHub Enterprise Server under /api/v3) in tests, because GitHub
// cannot run here. It serves the operations of GitHub's published
// description of self-hosted runners, App installations and workflow runs
// (cancel and force-cancel included), and holds every request it gets and
// every response it gives to that description (violations are recorded,
// never silently accepted). It refuses what GitHub refuses: an
// installation token acts within its installation's account and
// permissions (cancelling a run needs actions: write), a PAT within its
// scopes, and a run's state rules hold (a completed run cannot be
// cancelled; a running job ends only when its runner stops it). On top
// it can fail a share of calls as GitHub does (5xx, timeouts before or
// after acting, 429 with Retry-After, an exhausted rate limit), sends
// signed workflow_job webhooks, and speaks a small private protocol with a
// stand-in runner program (RunStandIn) so that tests can "run" jobs. It
// also serves the runner scale set service as github.com/actions/scaleset's
// client speaks it (scaleset.go says where its behaviour is a guess).
package githubdouble

import (
	"bytes"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"maps"
	"math/rand"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/internal/double/githubdouble/openapi"
)

// Options configure a double.
type Options struct {
	// Spec is the description every exchange is held to.
	Spec *openapi.Description
	// Prefix is where the API is mounted: "" as on api.github.com,
	// "/api/v3" as on GitHub Enterprise Server.
	Prefix string
	// AppID and AppKey are the GitHub App whose JWTs are accepted.
	AppID  int64
	AppKey *rsa.PublicKey
	// PATs are accepted personal access tokens (classic).
	PATs []string
	// PATScopes are the scopes of each PAT; a PAT not listed has
	// defaultPATScopes, what the driver's documentation asks for.
	PATScopes map[string][]string
	// RunnerURL is where stand-in runners reach the double; it goes into
	// each JIT configuration. Default: set by Serve/ServeTLS.
	RunnerURL string
	// RunnerURLs give runners whose names start with a key another URL
	// (hosts whose guests reach the double at another address).
	RunnerURLs map[string]string
	// TokenTTL is the life of installation tokens (GitHub: 1h).
	TokenTTL time.Duration
	// Seed makes fault injection repeatable.
	Seed int64
	// AdminTokenTTL is the life of scale-set admin and message-queue
	// tokens (default 1h); SessionIdle how long an unpolled message
	// session lives (default 2m); MessageWait how long a message poll
	// waits (default 50s, as GitHub).
	AdminTokenTTL, SessionIdle, MessageWait time.Duration
	// Logf, when set, is told of faults and deliveries.
	Logf func(format string, args ...any)
}

// LoadSpec reads the description from a file.
func LoadSpec(path string) (*openapi.Description, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return openapi.Parse(data)
}

// Double is the fake GitHub.
type Double struct {
	o Options

	mu            sync.Mutex
	rng           *rand.Rand
	nextID        int64
	installations map[int64]*installation
	tokens        map[string]*token
	runners       runnerSet
	groups        map[string][]*group // by org, lower case
	enterprises   map[string][]string // slug -> orgs, lower case
	runs          map[int64]*run
	jobs          map[int64]*job
	issued        map[int64]issuedRunner // every runner ever created
	reports       []RunnerReport
	violations    []string
	calls         map[string]int // by operation id
	faults        Faults
	faultCount    map[FaultKind]int
	rate          rateLimit             // the budget each credential starts with
	rates         map[string]*rateLimit // by credential (see budget)
	changed       chan struct{}         // closed and replaced on every state change
	onAcquire     func(Job)             // told of each job a runner takes (OnAcquire)
	hooks         *hookSender
	ss            scaleSetState
}

type installation struct {
	id         int64
	account    string // login or enterprise slug
	targetType string // Organization, User or Enterprise
	repos      []string
	perms      map[string]string // permission -> "read" or "write"
	gone       bool
}

type token struct {
	value   string
	inst    int64
	expires time.Time
	perms   map[string]string // what the token may do: the installation's, or fewer
}

type runner struct {
	id     int64
	name   string
	scope  scopeKey
	labels []string
	group  int64
	status string
	busy   bool
	secret string
	job    int64
	// scaleSet is the scale set the runner belongs to (0: none): it
	// takes only the jobs assigned to it.
	scaleSet int64
}

type issuedRunner struct {
	name   string
	jit    string
	secret string
}

// scopeKey is where a runner lives: org, repo (OWNER/NAME) or
// enterprise, lower case.
type scopeKey struct{ kind, name string }

type group struct {
	id   int64
	name string
}

type run struct {
	id         int64
	repo       string
	status     string
	conclusion string
	created    time.Time
	jobs       []int64
	// cancelling: a cancel was asked for; jobs still running end, as
	// cancelled, when their runners say so (or a force-cancel ends them).
	cancelling bool
}

type job struct {
	id         int64
	runID      int64
	repo       string
	name       string
	labels     []string
	status     string
	conclusion string
	created    time.Time
	started    time.Time
	completed  time.Time
	runnerID   int64
	runnerName string
	// killsRunner: the stand-in runner that takes it dies (JobSpec).
	killsRunner bool
	// scaleSet is the scale set the job is assigned to (0: none);
	// everSet the last one it ever was.
	scaleSet, everSet int64
}

// New returns a double with no installations, repositories or jobs.
func New(o Options) *Double {
	if o.TokenTTL == 0 {
		o.TokenTTL = time.Hour
	}
	return &Double{
		o: o, rng: rand.New(rand.NewSource(o.Seed)), nextID: 100,
		installations: map[int64]*installation{}, tokens: map[string]*token{},
		runners: newRunnerSet(), groups: map[string][]*group{}, enterprises: map[string][]string{},
		runs: map[int64]*run{}, jobs: map[int64]*job{}, issued: map[int64]issuedRunner{},
		calls: map[string]int{}, faultCount: map[FaultKind]int{},
		rate: newRateLimit(5000, time.Hour), rates: map[string]*rateLimit{}, changed: make(chan struct{}),
	}
}

func (d *Double) id() int64 {
	d.nextID++
	return d.nextID
}

func (d *Double) logf(format string, args ...any) {
	if d.o.Logf != nil {
		d.o.Logf(format, args...)
	}
}

// notify wakes stand-in runners waiting for a job. Callers hold d.mu.
func (d *Double) notify() {
	close(d.changed)
	d.changed = make(chan struct{})
}

// violation records a departure from the description.
func (d *Double) violation(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	d.mu.Lock()
	d.violations = append(d.violations, msg)
	d.mu.Unlock()
	d.logf("VIOLATION %s", msg)
}

// Violations are the exchanges that departed from the description.
func (d *Double) Violations() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.violations...)
}

// Calls counts the REST calls served (faulted ones included), by
// operation id.
func (d *Double) Calls() map[string]int {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := map[string]int{}
	for k, v := range d.calls {
		out[k] = v
	}
	return out
}

// TotalCalls is the number of REST calls served.
func (d *Double) TotalCalls() int {
	n := 0
	for _, v := range d.Calls() {
		n += v
	}
	return n
}

// ServeHTTP serves the REST API under the prefix and the stand-in runner
// protocol under prefix + "/_runner/".
func (d *Double) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path, ok := strings.CutPrefix(r.URL.Path, d.o.Prefix)
	if !ok || path == "" {
		d.violation("%s %s: outside the API prefix %q", r.Method, r.URL.Path, d.o.Prefix)
		http.NotFound(w, r)
		return
	}
	if path == "/actions/runner-registration" || strings.HasPrefix(path, "/_actions/") {
		d.serveActions(w, r, path)
		return
	}
	if strings.HasPrefix(path, "/_runner/") {
		d.serveRunner(w, r, strings.TrimPrefix(path, "/_runner/"))
		return
	}
	d.serveREST(w, r, path)
}

// serveREST checks the request, maybe injects a fault, runs the
// operation, checks the response and sends it.
func (d *Double) serveREST(w http.ResponseWriter, r *http.Request, path string) {
	body, err := openapi.ReadBody(r)
	if err != nil {
		http.Error(w, "read body", http.StatusBadRequest)
		return
	}
	op, vals, errs := d.o.Spec.CheckRequest(r.Method, path, r.URL.Query(), r.Header.Get("Content-Type"), body)
	for _, e := range errs {
		d.violation("request: %v", e)
	}
	if op == nil {
		writeJSON(w, http.StatusNotFound, basicError("Not Found"))
		return
	}
	d.mu.Lock()
	d.calls[op.ID]++
	fault := d.pickFault(op.ID)
	d.mu.Unlock()

	c := &call{d: d, r: r, op: op, path: vals, query: r.URL.Query(), header: http.Header{}}
	if len(bytes.TrimSpace(body)) > 0 {
		if err := json.Unmarshal(body, &c.body); err != nil {
			writeJSON(w, http.StatusBadRequest, basicError("Problems parsing JSON"))
			return
		}
	}
	if fault.before(d, w, r, op) {
		return
	}
	rec := httptest.NewRecorder()
	d.handle(c, rec)
	for _, e := range op.CheckResponse(rec.Code, rec.Header().Get("Content-Type"), rec.Body.Bytes()) {
		d.violation("response: %v", e)
	}
	if fault.after(d, r, op) {
		return
	}
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	_, _ = w.Write(rec.Body.Bytes())
}

// call is one REST request being served.
type call struct {
	d      *Double
	r      *http.Request
	op     *openapi.Operation
	path   map[string]string
	query  map[string][]string
	body   map[string]any
	header http.Header
	inst   *installation // the installation a token belongs to; nil for a PAT
	tok    *token        // the installation token; nil for a PAT
	pat    string        // the PAT; "" for an installation token
}

// handle authenticates, applies the rate limit and runs the operation.
func (d *Double) handle(c *call, w *httptest.ResponseRecorder) {
	d.mu.Lock()
	defer d.mu.Unlock()
	status, body := d.authenticate(c)
	if status == 0 {
		status, body = d.budget(c).take(time.Now(), w.Header())
	}
	if status == 0 {
		h, ok := handlers[c.op.ID]
		if !ok {
			status, body = http.StatusNotFound, basicError("Not Found")
		} else {
			status, body = h(d, c)
		}
	}
	for k, v := range c.header {
		w.Header()[k] = v
	}
	if body == nil {
		w.WriteHeader(status)
		return
	}
	writeJSON(w, status, body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"message":"encode"}`)
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

func basicError(msg string) map[string]any {
	return map[string]any{"message": msg, "documentation_url": "https://docs.github.com/rest"}
}

// Runner is a registered runner as the double holds it.
type Runner struct {
	ID     int64
	Name   string
	Scope  string // "org:acme", "repo:acme/widgets", "enterprise:e"
	Labels []string
	Group  int64
	Status string
	Busy   bool
}

// Runners lists every registered runner.
func (d *Double) Runners() []Runner {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]Runner, 0, len(d.runners.byID))
	for _, r := range d.runners.byID {
		out = append(out, Runner{ID: r.id, Name: r.name, Scope: r.scope.kind + ":" + r.scope.name,
			Labels: append([]string(nil), r.labels...), Group: r.group, Status: r.status, Busy: r.busy})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// JIT is the JIT configuration issued for a runner id (kept after the
// runner is gone), and the runner's name.
func (d *Double) JIT(id int64) (name, jit string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	ir := d.issued[id]
	return ir.name, ir.jit
}

// IssuedJITs are the JIT configurations handed out, by runner name. A
// name issued more than once (the driver registering again after an
// answer was lost) maps to the latest, the one its VM got.
func (d *Double) IssuedJITs() map[string]string {
	d.mu.Lock()
	defer d.mu.Unlock()
	ids := slices.Sorted(maps.Keys(d.issued))
	out := map[string]string{}
	for _, id := range ids {
		ir := d.issued[id]
		out[ir.name] = ir.jit
	}
	return out
}

// Tokens are every installation token handed out.
func (d *Double) Tokens() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]string, 0, len(d.tokens))
	for v := range d.tokens {
		out = append(out, v)
	}
	return out
}
