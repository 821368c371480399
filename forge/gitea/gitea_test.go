package gitea

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	runnerv1 "code.gitea.io/actions-proto-go/runner/v1"
	"code.gitea.io/actions-proto-go/runner/v1/runnerv1connect"
	"connectrpc.com/connect"

	"github.com/nixos-fireactions/nixos-fireactions/forge"
	"github.com/nixos-fireactions/nixos-fireactions/forge/forgetest"
)

// fakeGitea serves the REST paths and the runner Register call the driver
// uses, shaped as Gitea 1.26 answers them (the end-to-end test runs the
// real one).
type fakeGitea struct {
	runnerv1connect.UnimplementedRunnerServiceHandler
	mu        sync.Mutex
	apiToken  string
	regToken  string
	regIssued int
	runners   map[int64]string
	nextID    int64
	jobs      []apiJob
	paths     []string
}

func newFakeGitea(t *testing.T) (*fakeGitea, *httptest.Server) {
	f := &fakeGitea{apiToken: "API-TOKEN", regToken: "REG-TOKEN-1", runners: map[int64]string{}}
	return f, serveFake(t, f)
}

// serveFake serves a fake's REST paths and runner service.
func serveFake(t *testing.T, f interface {
	runnerv1connect.RunnerServiceHandler
	rest(http.ResponseWriter, *http.Request)
}) *httptest.Server {
	srv := httptest.NewServer(fakeHandler(f))
	t.Cleanup(srv.Close)
	return srv
}

// fakeHandler routes a fake's REST paths and runner service.
func fakeHandler(f interface {
	runnerv1connect.RunnerServiceHandler
	rest(http.ResponseWriter, *http.Request)
}) http.Handler {
	mux := http.NewServeMux()
	path, h := runnerv1connect.NewRunnerServiceHandler(f)
	mux.Handle("/api/actions"+path, http.StripPrefix("/api/actions", h))
	mux.HandleFunc("/api/v1/", f.rest)
	return mux
}

func (f *fakeGitea) rest(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.paths = append(f.paths, r.Method+" "+r.URL.Path)
	if r.Header.Get("Authorization") != "token "+f.apiToken {
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return
	}
	p := r.URL.Path
	switch {
	case r.Method == http.MethodPost && strings.HasSuffix(p, "/actions/runners/registration-token"):
		f.regIssued++
		json.NewEncoder(w).Encode(map[string]string{"token": f.regToken})
	case r.Method == http.MethodGet && strings.HasSuffix(p, "/actions/runners"):
		var out []apiRunner
		for id, name := range f.runners {
			out = append(out, apiRunner{ID: id, Name: name, Status: "idle"})
		}
		json.NewEncoder(w).Encode(map[string]any{"runners": out, "total_count": len(out)})
	case r.Method == http.MethodDelete && strings.Contains(p, "/actions/runners/"):
		var id int64
		fmt.Sscan(p[strings.LastIndex(p, "/")+1:], &id)
		if _, ok := f.runners[id]; !ok {
			http.NotFound(w, r)
			return
		}
		delete(f.runners, id)
		w.WriteHeader(http.StatusNoContent)
	case r.Method == http.MethodGet && strings.HasSuffix(p, "/actions/jobs"):
		if r.URL.Query().Get("status") != "queued" {
			http.Error(w, "want status=queued", http.StatusBadRequest)
			return
		}
		json.NewEncoder(w).Encode(map[string]any{"jobs": f.jobs, "total_count": len(f.jobs)})
	default:
		http.NotFound(w, r)
	}
}

func (f *fakeGitea) Register(_ context.Context, req *connect.Request[runnerv1.RegisterRequest]) (*connect.Response[runnerv1.RegisterResponse], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if req.Msg.Token != f.regToken {
		return nil, connect.NewError(connect.CodeUnauthenticated, fmt.Errorf("runner registration token not found"))
	}
	f.nextID++
	f.runners[f.nextID] = req.Msg.Name
	return connect.NewResponse(&runnerv1.RegisterResponse{Runner: &runnerv1.Runner{
		Id: f.nextID, Uuid: fmt.Sprintf("uuid-%d", f.nextID), Token: fmt.Sprintf("RUNNER-OWN-TOKEN-%d", f.nextID),
		Name: req.Msg.Name, Labels: req.Msg.Labels,
	}}), nil
}

func newDriver(t *testing.T, url string, scope Scope) *Forge {
	t.Helper()
	f, err := New(Options{URL: url, GuestURL: "http://10.0.0.1:3000", Token: "API-TOKEN", Scope: scope, Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

var guestOpts = forge.GuestOptions{AgentPath: "/bin/act_runner", User: "runner", UID: 1000, GID: 1000, FetchInterval: time.Second}

func TestScopePaths(t *testing.T) {
	tests := []struct {
		scope Scope
		want  string
	}{
		{Scope{Kind: "instance"}, "/api/v1/admin/actions/runners/registration-token"},
		{Scope{Kind: "org", Org: "acme"}, "/api/v1/orgs/acme/actions/runners/registration-token"},
		{Scope{Kind: "repo", Owner: "acme", Repo: "app"}, "/api/v1/repos/acme/app/actions/runners/registration-token"},
	}
	for _, tc := range tests {
		t.Run(tc.scope.Kind, func(t *testing.T) {
			fg, srv := newFakeGitea(t)
			d := newDriver(t, srv.URL, tc.scope)
			if _, err := d.Register(context.Background(), forge.RunnerSpec{Name: "fa-h-1", Labels: []string{"linux"}, Guest: guestOpts}); err != nil {
				t.Fatal(err)
			}
			if got := fg.paths[0]; got != "POST "+tc.want {
				t.Fatalf("first call %q, want POST %s", got, tc.want)
			}
		})
	}
	if _, err := New(Options{URL: "http://x", Scope: Scope{Kind: "galaxy"}}); err == nil {
		t.Fatal("unknown scope accepted")
	}
}

func TestRegisterHandsTheGuestOnlyItsOwnCredential(t *testing.T) {
	fg, srv := newFakeGitea(t)
	d := newDriver(t, srv.URL, Scope{Kind: "instance"})
	r, err := d.Register(context.Background(), forge.RunnerSpec{Name: "fa-h-1", Labels: []string{"linux", "big"}, Guest: guestOpts})
	if err != nil {
		t.Fatal(err)
	}
	plan, _ := json.Marshal(r.Guest)
	var files strings.Builder
	for _, f := range r.Guest.Files {
		files.Write(f.Content)
	}
	all := string(plan) + files.String()
	for _, secret := range []string{fg.apiToken, fg.regToken} {
		if strings.Contains(all, secret) {
			t.Fatalf("guest plan holds the scope-wide secret %q", secret)
		}
	}
	if !strings.Contains(files.String(), "RUNNER-OWN-TOKEN-1") {
		t.Fatal("guest plan lacks the runner's own token")
	}
	var reg registration
	if err := json.Unmarshal(r.Guest.Files[0].Content, &reg); err != nil {
		t.Fatal(err)
	}
	if !reg.Ephemeral || reg.Address != "http://10.0.0.1:3000" || strings.Join(reg.Labels, ",") != "linux:host,big:host" {
		t.Fatalf(".runner = %+v", reg)
	}
	if r.Guest.Files[0].Mode != 0o600 || r.Guest.UID != 1000 || r.Guest.ReadyLine == "" {
		t.Fatalf("guest plan = %+v", r.Guest)
	}
	if r.ID != "1" || r.Name != "fa-h-1" {
		t.Fatalf("runner ref = %+v", r.RunnerRef)
	}
}

func TestRegistrationTokenCachedAndRefreshedWhenReset(t *testing.T) {
	fg, srv := newFakeGitea(t)
	d := newDriver(t, srv.URL, Scope{Kind: "instance"})
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		if _, err := d.Register(ctx, forge.RunnerSpec{Name: fmt.Sprint("r", i), Labels: []string{"l"}, Guest: guestOpts}); err != nil {
			t.Fatal(err)
		}
	}
	if fg.regIssued != 1 {
		t.Fatalf("registration token fetched %d times for 3 runners, want 1", fg.regIssued)
	}
	fg.mu.Lock()
	fg.regToken = "REG-TOKEN-2" // an admin reset the token
	fg.mu.Unlock()
	if _, err := d.Register(ctx, forge.RunnerSpec{Name: "after-reset", Labels: []string{"l"}, Guest: guestOpts}); err != nil {
		t.Fatalf("register after a token reset: %v", err)
	}
	if fg.regIssued != 2 {
		t.Fatalf("token fetched %d times, want 2 (one refresh)", fg.regIssued)
	}
}

func TestRemoveIsIdempotentAndRunnersListsOnlyTheOwners(t *testing.T) {
	fg, srv := newFakeGitea(t)
	d := newDriver(t, srv.URL, Scope{Kind: "instance"})
	ctx := context.Background()
	owner, _ := forge.NewOwner("h")
	mine := owner.RunnerName("0123456789ab")
	fg.runners[7] = mine
	fg.runners[8] = "someone-else"
	rs, err := d.Runners(ctx, owner)
	if err != nil || len(rs) != 1 || rs[0].Name != mine || rs[0].ID != "7" || !rs[0].Online {
		t.Fatalf("Runners = %+v, %v", rs, err)
	}
	if err := d.Remove(ctx, forge.RunnerRef{ID: "7", Name: mine}); err != nil {
		t.Fatal(err)
	}
	if err := d.Remove(ctx, forge.RunnerRef{ID: "7", Name: mine}); err != nil {
		t.Fatalf("removing a gone runner: %v", err)
	}
	if _, ok := fg.runners[8]; !ok {
		t.Fatal("another runner was removed")
	}
}

// Hosts a, a-b and a-b-c share one Gitea: each sweeps exactly its own
// runners (issue 23: "fa-a-" starts every runner name of host a-b).
func TestSweepTakesExactlyTheHostsOwnRunners(t *testing.T) {
	forgetest.SweepsExactlyItsOwn(t, func(t *testing.T) forgetest.SweepCase {
		fg, srv := newFakeGitea(t)
		return forgetest.SweepCase{
			Forge: newDriver(t, srv.URL, Scope{Kind: "org", Owner: "acme"}),
			Spec: func(name string) forge.RunnerSpec {
				return forge.RunnerSpec{Name: name, Labels: []string{"linux"}, Guest: guestOpts}
			},
			Left: func() []string {
				fg.mu.Lock()
				defer fg.mu.Unlock()
				var out []string
				for _, n := range fg.runners {
					out = append(out, n)
				}
				return out
			},
		}
	})
}

func TestQueuedJobs(t *testing.T) {
	fg, srv := newFakeGitea(t)
	fg.jobs = []apiJob{{ID: 11, Labels: []string{"linux"}, Status: "queued"}, {ID: 12, Labels: []string{"gpu"}, Status: "queued"}}
	d := newDriver(t, srv.URL, Scope{Kind: "repo", Owner: "o", Repo: "r"})
	jobs, err := d.QueuedJobs(context.Background())
	if err != nil || len(jobs) != 2 || jobs[0].ID != "11" || jobs[1].Labels[0] != "gpu" {
		t.Fatalf("QueuedJobs = %+v, %v", jobs, err)
	}
}

func TestAPIErrorsNameTheCall(t *testing.T) {
	_, srv := newFakeGitea(t)
	d, _ := New(Options{URL: srv.URL, Token: "WRONG", Scope: Scope{Kind: "instance"}})
	_, err := d.QueuedJobs(context.Background())
	if err == nil || !strings.Contains(err.Error(), "401") || !strings.Contains(err.Error(), "/actions/jobs") {
		t.Fatalf("err = %v", err)
	}
	if strings.Contains(err.Error(), "WRONG") {
		t.Fatal("error leaks the token")
	}
}
