package giteadouble

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	runnerv1 "code.gitea.io/actions-proto-go/runner/v1"
	"code.gitea.io/actions-proto-go/runner/v1/runnerv1connect"
)

// Job is a workflow job as Gitea's REST API lists it
// (structs.ActionWorkflowJob, the fields the driver reads).
type Job struct {
	ID        int64     `json:"id"`
	RunID     int64     `json:"run_id"`
	RunURL    string    `json:"run_url"`
	Name      string    `json:"name"`
	Labels    []string  `json:"labels"`
	Status    string    `json:"status"` // "queued", "in_progress", "completed", …
	CreatedAt time.Time `json:"created_at"`
}

// Runner is a registered runner.
type Runner struct {
	Name      string
	UUID      string
	Token     string
	Labels    []string
	Ephemeral bool
}

// Gitea is the double. Lock Mu to read or change its fields while it
// serves.
type Gitea struct {
	runnerv1connect.UnimplementedRunnerServiceHandler

	Mu        sync.Mutex
	APIToken  string // the scope-wide API token every REST call needs
	RegToken  string // the registration token Register takes
	RegIssued int    // registration tokens handed out
	Runners   map[int64]*Runner
	NextID    int64
	Jobs      []Job
	Paths     []string // "METHOD /path" of every REST call

	// The runner service's tasks.
	TaskOwner map[int64]int64 // task -> runner id
	Results   map[int64]runnerv1.Result
	Logs      map[int64][]string
	Headers   []string // "uuid|token" of every authenticated runner call

	// WithoutEphemeral makes Register answer as a Gitea that knows no
	// ephemeral runners: the answer's flag stays false.
	WithoutEphemeral bool
	// RegisterDelay makes Register take that long before it creates the
	// runner, finishing even if the caller gave up: a slow Gitea whose
	// answer the caller never gets.
	RegisterDelay time.Duration
	// FailDeletes makes the next that many runner deletions answer 500
	// (a Gitea whose database is briefly away), deleting nothing.
	FailDeletes int
}

// New returns a Gitea with API token "API-TOKEN" and registration token
// "REG-TOKEN-1".
func New() *Gitea {
	return &Gitea{
		APIToken: "API-TOKEN", RegToken: "REG-TOKEN-1", Runners: map[int64]*Runner{},
		TaskOwner: map[int64]int64{}, Results: map[int64]runnerv1.Result{}, Logs: map[int64][]string{},
	}
}

// Serve serves g on a test server closed with the test.
func Serve(t testing.TB, g *Gitea) *httptest.Server {
	srv := httptest.NewServer(g.Handler())
	t.Cleanup(srv.Close)
	return srv
}

// Handler routes the REST paths and the runner service.
func (g *Gitea) Handler() http.Handler {
	mux := http.NewServeMux()
	path, h := runnerv1connect.NewRunnerServiceHandler(g)
	mux.Handle("/api/actions"+path, http.StripPrefix("/api/actions", h))
	mux.HandleFunc("/api/v1/", g.rest)
	return mux
}

// AddRunner registers a runner as if by Register and returns its id.
func (g *Gitea) AddRunner(name string, ephemeral bool) int64 {
	g.Mu.Lock()
	defer g.Mu.Unlock()
	return g.addRunner(name, nil, ephemeral)
}

func (g *Gitea) addRunner(name string, labels []string, ephemeral bool) int64 {
	g.NextID++
	id := g.NextID
	g.Runners[id] = &Runner{Name: name, UUID: fmt.Sprintf("uuid-%d", id), Token: fmt.Sprintf("RUNNER-OWN-TOKEN-%d", id),
		Labels: labels, Ephemeral: ephemeral}
	return id
}

// RunnerNames lists the registered runners' names.
func (g *Gitea) RunnerNames() []string {
	g.Mu.Lock()
	defer g.Mu.Unlock()
	var out []string
	for _, r := range g.Runners {
		out = append(out, r.Name)
	}
	return out
}

// scoped reports whether p is an actions path of one of Gitea's three
// scopes: /api/v1/admin/actions/…, /api/v1/orgs/{org}/actions/… or
// /api/v1/repos/{owner}/{repo}/actions/…; rest is what follows "actions/".
func scoped(p string) (rest string, ok bool) {
	parts := strings.Split(strings.TrimPrefix(p, "/api/v1/"), "/")
	n := 0
	switch {
	case len(parts) > 1 && parts[0] == "admin":
		n = 1
	case len(parts) > 2 && parts[0] == "orgs" && parts[1] != "":
		n = 2
	case len(parts) > 3 && parts[0] == "repos" && parts[1] != "" && parts[2] != "":
		n = 3
	default:
		return "", false
	}
	if parts[n] != "actions" {
		return "", false
	}
	return strings.Join(parts[n+1:], "/"), true
}

type apiRunner struct {
	ID        int64  `json:"id"`
	Name      string `json:"name"`
	Status    string `json:"status"`
	Busy      bool   `json:"busy"`
	Disabled  bool   `json:"disabled"`
	Ephemeral bool   `json:"ephemeral"`
	Labels    []any  `json:"labels"`
}

func (g *Gitea) rest(w http.ResponseWriter, r *http.Request) {
	g.Mu.Lock()
	defer g.Mu.Unlock()
	g.Paths = append(g.Paths, r.Method+" "+r.URL.Path)
	if r.Header.Get("Authorization") != "token "+g.APIToken {
		writeJSON(w, http.StatusUnauthorized, map[string]string{"message": "token is required"})
		return
	}
	rest, ok := scoped(r.URL.Path)
	if !ok {
		http.NotFound(w, r)
		return
	}
	switch {
	case r.Method == http.MethodPost && rest == "runners/registration-token":
		g.RegIssued++
		writeJSON(w, http.StatusOK, map[string]string{"token": g.RegToken})
	case r.Method == http.MethodGet && rest == "runners":
		out := []apiRunner{}
		for id, rn := range g.Runners {
			out = append(out, apiRunner{ID: id, Name: rn.Name, Status: "idle", Ephemeral: rn.Ephemeral, Labels: []any{}})
		}
		writeJSON(w, http.StatusOK, map[string]any{"runners": out, "total_count": len(out)})
	case r.Method == http.MethodDelete && strings.HasPrefix(rest, "runners/") && g.FailDeletes > 0:
		g.FailDeletes--
		writeJSON(w, http.StatusInternalServerError, map[string]string{"message": "internal server error"})
	case r.Method == http.MethodDelete && strings.HasPrefix(rest, "runners/"):
		id, err := strconv.ParseInt(strings.TrimPrefix(rest, "runners/"), 10, 64)
		if _, ok := g.Runners[id]; err != nil || !ok {
			writeJSON(w, http.StatusNotFound, map[string]string{"message": "runner not found"})
			return
		}
		delete(g.Runners, id)
		w.WriteHeader(http.StatusNoContent)
	case r.Method == http.MethodGet && rest == "jobs":
		var want []string // the jobs' states the status filters name
		for _, st := range r.URL.Query()["status"] {
			s, ok := jobStatus(st)
			if !ok {
				writeJSON(w, http.StatusBadRequest, map[string]string{"message": "Invalid status " + st})
				return
			}
			want = append(want, s)
		}
		out := []Job{}
		for _, j := range g.Jobs {
			if len(want) == 0 || slices.Contains(want, j.Status) {
				out = append(out, j)
			}
		}
		writeJSON(w, http.StatusOK, map[string]any{"jobs": out, "total_count": len(out)})
	default:
		http.NotFound(w, r)
	}
}

// jobStatus is the job state (as Job.Status holds it) a status filter of
// the jobs listing names (routers/api/v1/shared/action.go
// convertToInternal, seen through services/convert.ToActionsStatus).
func jobStatus(filter string) (string, bool) {
	switch filter {
	case "pending", "waiting", "requested", "action_required":
		return "waiting", true
	case "queued", "in_progress":
		return filter, true
	case "completed", "failure", "success", "skipped", "neutral", "cancelled", "timed_out":
		return "completed", true
	}
	return "", false
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json;charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
