package gitea

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/forge"
	"github.com/nixos-fireactions/nixos-fireactions/forge/forgetest"
	"github.com/nixos-fireactions/nixos-fireactions/internal/double/giteadouble"
)

func newFakeGitea(t *testing.T) (*giteadouble.Gitea, *httptest.Server) {
	g := giteadouble.New()
	return g, giteadouble.Serve(t, g)
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
			if got := fg.Paths[0]; got != "POST "+tc.want {
				t.Fatalf("first call %q, want POST %s", got, tc.want)
			}
		})
	}
	for _, bad := range []Scope{{Kind: "galaxy"}, {Kind: "org"}, {Kind: "org", Owner: "acme"}, {Kind: "repo", Owner: "acme"}} {
		if _, err := New(Options{URL: "http://x", Scope: bad}); err == nil {
			t.Errorf("scope %+v accepted", bad)
		}
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
	for _, secret := range []string{fg.APIToken, fg.RegToken} {
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

// TestRegisterRefusesARunnerGiteaDidNotMakeEphemeral: the ephemeral flag
// is Gitea's answer, not ours; a runner Gitea made reusable is removed
// and the registration fails, saying why.
func TestRegisterRefusesARunnerGiteaDidNotMakeEphemeral(t *testing.T) {
	fg, srv := newFakeGitea(t)
	d := newDriver(t, srv.URL, Scope{Kind: "instance"})
	// Positive control: Gitea 1.26 keeps the flag, the runner is made.
	if _, err := d.Register(context.Background(), forge.RunnerSpec{Name: "fa-h-1", Labels: []string{"l"}, Guest: guestOpts}); err != nil {
		t.Fatal(err)
	}
	fg.Mu.Lock()
	fg.WithoutEphemeral = true
	fg.Mu.Unlock()
	r, err := d.Register(context.Background(), forge.RunnerSpec{Name: "fa-h-2", Labels: []string{"l"}, Guest: guestOpts})
	if err == nil || !strings.Contains(err.Error(), "ephemeral") {
		t.Fatalf("Register of a non-ephemeral runner = %+v, %v; want an error naming ephemeral", r, err)
	}
	if names := fg.RunnerNames(); len(names) != 1 || names[0] != "fa-h-1" {
		t.Fatalf("runners left %q, want only fa-h-1", names)
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
	if fg.RegIssued != 1 {
		t.Fatalf("registration token fetched %d times for 3 runners, want 1", fg.RegIssued)
	}
	fg.Mu.Lock()
	fg.RegToken = "REG-TOKEN-2" // an admin reset the token
	fg.Mu.Unlock()
	if _, err := d.Register(ctx, forge.RunnerSpec{Name: "after-reset", Labels: []string{"l"}, Guest: guestOpts}); err != nil {
		t.Fatalf("register after a token reset: %v", err)
	}
	if fg.RegIssued != 2 {
		t.Fatalf("token fetched %d times, want 2 (one refresh)", fg.RegIssued)
	}
}

func TestRemoveIsIdempotentAndRunnersListsOnlyTheOwners(t *testing.T) {
	fg, srv := newFakeGitea(t)
	d := newDriver(t, srv.URL, Scope{Kind: "instance"})
	ctx := context.Background()
	owner, _ := forge.NewOwner("h")
	mine := owner.RunnerName("0123456789ab")
	id := fmt.Sprint(fg.AddRunner(mine, true))
	other := fg.AddRunner("someone-else", false)
	rs, err := d.Runners(ctx, owner)
	if err != nil || len(rs) != 1 || rs[0].Name != mine || rs[0].ID != id || !rs[0].Online {
		t.Fatalf("Runners = %+v, %v", rs, err)
	}
	if err := d.Remove(ctx, forge.RunnerRef{ID: id, Name: mine}); err != nil {
		t.Fatal(err)
	}
	if err := d.Remove(ctx, forge.RunnerRef{ID: id, Name: mine}); err != nil {
		t.Fatalf("removing a gone runner: %v", err)
	}
	if _, ok := fg.Runners[other]; !ok {
		t.Fatal("another runner was removed")
	}
}

// Hosts a, a-b and a-b-c share one Gitea: each sweeps exactly its own
// runners (issue 23: "fa-a-" starts every runner name of host a-b).
func TestSweepTakesExactlyTheHostsOwnRunners(t *testing.T) {
	forgetest.SweepsExactlyItsOwn(t, func(t *testing.T) forgetest.SweepCase {
		fg, srv := newFakeGitea(t)
		return forgetest.SweepCase{
			Forge: newDriver(t, srv.URL, Scope{Kind: "org", Org: "acme"}),
			Spec: func(name string) forge.RunnerSpec {
				return forge.RunnerSpec{Name: name, Labels: []string{"linux"}, Guest: guestOpts}
			},
			Left: fg.RunnerNames,
		}
	})
}

func TestQueuedJobs(t *testing.T) {
	fg, srv := newFakeGitea(t)
	fg.Jobs = []giteadouble.Job{{ID: 11, Labels: []string{"linux"}, Status: "queued"}, {ID: 12, Labels: []string{"gpu"}, Status: "queued"}}
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
