package gitlab

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/forge"
	"github.com/nixos-fireactions/nixos-fireactions/forge/forgetest"
	"github.com/nixos-fireactions/nixos-fireactions/internal/double/gitlabdouble"
)

const accessToken = "glpat-SCOPE-WIDE-ACCESS-TOKEN"

var guestOpts = forge.GuestOptions{AgentPath: "/usr/bin/gitlab-runner", User: "runner", UID: 1000, GID: 1000, FetchInterval: 2 * time.Second}

// env is the double with a group acme (subgroup acme/sub), projects
// acme/app and acme/sub/lib, and a driver for scope.
type env struct {
	gl  *gitlabdouble.Server
	srv *httptest.Server
	f   *Forge
}

func newEnv(t *testing.T, scope Scope, mod ...func(*Options)) *env {
	t.Helper()
	d := gitlabdouble.New(accessToken)
	srv := httptest.NewServer(d.Handler())
	t.Cleanup(srv.Close)
	d.AddProject("acme/app")
	d.AddProject("acme/sub/lib")
	d.AddProject("other/tool")
	o := Options{
		URL: srv.URL, GuestURL: "http://10.0.0.1:8080", Token: accessToken, WebhookSecret: "hook-secret",
		Scope: scope, Pool: "linux", RequestTimeout: 2 * time.Second,
		Runner: RunnerSettings{Locked: true, AccessLevel: "not_protected", Executor: "shell"},
	}
	for _, m := range mod {
		m(&o)
	}
	f, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return &env{gl: d, srv: srv, f: f}
}

func (e *env) register(t *testing.T, name string, labels ...string) *forge.Runner {
	t.Helper()
	r, err := e.f.Register(context.Background(), forge.RunnerSpec{Name: name, Labels: labels, Guest: guestOpts})
	if err != nil {
		t.Fatalf("register %s: %v", name, err)
	}
	return r
}

func onlyRunner(t *testing.T, d *gitlabdouble.Server) gitlabdouble.Runner {
	t.Helper()
	rs := d.Runners()
	if len(rs) != 1 {
		t.Fatalf("the double has %d runners, want 1", len(rs))
	}
	for _, r := range rs {
		return r
	}
	panic("unreachable")
}

// TestRegisterCreatesARunnerOfTheScope: POST /user/runners with the
// scope's runner type and ID and the pool's settings.
func TestRegisterCreatesARunnerOfTheScope(t *testing.T) {
	tests := []struct {
		scope   Scope
		typ     string
		project string
		group   string
	}{
		{Scope{Kind: ScopeProject, Path: "acme/sub/lib"}, "project_type", "acme/sub/lib", ""},
		{Scope{Kind: ScopeGroup, Path: "acme"}, "group_type", "", "acme"},
		{Scope{Kind: ScopeInstance}, "instance_type", "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.scope.Kind, func(t *testing.T) {
			e := newEnv(t, tc.scope, func(o *Options) {
				o.Runner = RunnerSettings{RunUntagged: true, Locked: false, AccessLevel: "ref_protected", MaximumTimeout: 3 * time.Hour, Executor: "shell"}
			})
			r := e.register(t, "fa-h-0a1b", "linux", "big")
			got := onlyRunner(t, e.gl)
			if got.Type != tc.typ || strings.Join(got.Tags, ",") != "linux,big" || !got.RunUntagged || got.Locked ||
				got.AccessLevel != "ref_protected" || got.MaximumTimeout != 3*3600 || got.Paused {
				t.Fatalf("runner = %+v", got)
			}
			if got.Description != "fa-h-0a1b pool=linux" {
				t.Fatalf("description %q does not name the runner (VM) and pool", got.Description)
			}
			if r.ID != fmt.Sprint(got.ID) || r.Name != "fa-h-0a1b" {
				t.Fatalf("ref = %+v", r.RunnerRef)
			}
			for _, c := range e.gl.Calls() {
				if tc.project != "" && strings.HasPrefix(c, "GET /api/v4/projects/") && !strings.Contains(c, tc.project) {
					t.Fatalf("looked up the wrong project: %s", c)
				}
			}
		})
	}
}

// TestGuestPlanHoldsOnlyTheRunnersOwnToken: the glrt- token is in
// config.toml (mode 600, removed once the runner has read it) and nowhere
// else; the scope-wide token nowhere.
func TestGuestPlanHoldsOnlyTheRunnersOwnToken(t *testing.T) {
	e := newEnv(t, Scope{Kind: ScopeProject, Path: "acme/app"})
	r := e.register(t, "fa-h-1", "linux")
	tok := onlyRunner(t, e.gl).Token
	plan, _ := json.Marshal(r.Guest)
	if strings.Contains(string(plan), accessToken) {
		t.Fatal("the guest plan holds the scope-wide access token")
	}
	g := r.Guest
	argv := strings.Join(append(g.Command, g.Env...), " ")
	if strings.Contains(argv, tok) || strings.Contains(argv, "glrt-") {
		t.Fatalf("the runner token is in the command line or environment: %s", argv)
	}
	want := []string{"/usr/bin/gitlab-runner", "run-single", "--config", "/home/runner/.gitlab-runner/config.toml", "--runner", "fa-h-1", "--max-builds", "1"}
	if !slices.Equal(g.Command, want) {
		t.Fatalf("command = %q, want %q", g.Command, want)
	}
	if len(g.Files) != 1 || g.Files[0].Mode != 0o600 || !strings.Contains(string(g.Files[0].Content), tok) {
		t.Fatalf("files = %+v", g.Files)
	}
	if !g.Files[0].RemoveWhenReady {
		t.Fatal("config.toml stays in the guest after the runner read it: the job, running as the same user, can read the token")
	}
	if g.ReadyLine != ReadyLine || g.BusyLine != BusyLine || g.UID != 1000 || g.GID != 1000 || g.Forge != "gitlab" || g.Home != "/home/runner" {
		t.Fatalf("plan = %+v", g)
	}
}

// TestConfigTOMLIsWhatGitLabRunnerReads decodes the plan's config.toml
// strictly with gitlab-runner's key names and TOML types.
func TestConfigTOMLIsWhatGitLabRunnerReads(t *testing.T) {
	e := newEnv(t, Scope{Kind: ScopeInstance})
	e.gl.TokenLifetime = 24 * time.Hour
	r := e.register(t, "fa-h-2", "linux")
	run := onlyRunner(t, e.gl)
	rc, err := gitlabdouble.DecodeRunnerConfig(r.Guest.Files[0].Content, "fa-h-2")
	if err != nil {
		t.Fatalf("%v\n%s", err, r.Guest.Files[0].Content)
	}
	if rc.URL != "http://10.0.0.1:8080" || rc.Token != run.Token || rc.ID != run.ID || rc.Executor != "shell" ||
		rc.BuildsDir != "/home/runner/builds" || rc.CacheDir != "/home/runner/cache" || rc.Docker != nil {
		t.Fatalf("runner config = %+v", rc)
	}
	if !rc.TokenExpiresAt.Equal(*run.TokenExpiresAt) || rc.TokenObtainedAt.IsZero() {
		t.Fatalf("token times: obtained %v, expires %v, want %v", rc.TokenObtainedAt, rc.TokenExpiresAt, run.TokenExpiresAt)
	}
	i := slices.Index(r.Guest.Command, "--wait-timeout")
	if i < 0 {
		t.Fatalf("a token that expires gives no --wait-timeout: %q", r.Guest.Command)
	}
	var wait int
	fmt.Sscan(r.Guest.Command[i+1], &wait)
	if left := time.Until(*run.TokenExpiresAt); time.Duration(wait)*time.Second > left-3*time.Minute || wait < 3600 {
		t.Fatalf("--wait-timeout %ds with the token expiring in %s", wait, left)
	}
}

func TestConfigTOMLDockerAndCustomCA(t *testing.T) {
	ca := t.TempDir() + "/ca.pem"
	pem := "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUQ3VzdG9tIENBIGZvciB0ZXN0c\n-----END CERTIFICATE-----\n"
	writeTestFile(t, ca, pem)
	_, err := New(Options{URL: "https://gitlab.example.com", Token: "x", Scope: Scope{Kind: ScopeInstance}, CAFile: ca})
	if err == nil || !strings.Contains(err.Error(), "ca_file") {
		t.Fatalf("a CA file that is not a certificate: %v", err)
	}
	f := &Forge{o: Options{Runner: RunnerSettings{Executor: "docker"}, Now: time.Now}, guestURL: "https://gitlab.example.com", caPEM: []byte(pem)}
	plan, err := f.guestPlan(forge.RunnerSpec{Name: `fa-"odd"\name`, Guest: guestOpts}, userRunner(5, "glrt-t"), 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.Files) != 2 || plan.Files[0].Path != "/home/runner/.gitlab-runner/ca.pem" || string(plan.Files[0].Content) != pem {
		t.Fatalf("files = %+v", plan.Files)
	}
	rc, err := gitlabdouble.DecodeRunnerConfig(plan.Files[1].Content, `fa-"odd"\name`)
	if err != nil {
		t.Fatalf("%v\n%s", err, plan.Files[1].Content)
	}
	if rc.Executor != "docker" || rc.Docker == nil || rc.Docker.Privileged || rc.TLSCAFile != "/home/runner/.gitlab-runner/ca.pem" {
		t.Fatalf("runner config = %+v", rc)
	}
}

// TestShortLivedTokenIsRefusedAndItsRunnerRemoved: a token that expires
// before a VM could boot and take a job is useless; no runner is left.
func TestShortLivedTokenIsRefusedAndItsRunnerRemoved(t *testing.T) {
	e := newEnv(t, Scope{Kind: ScopeProject, Path: "acme/app"}, func(o *Options) { o.BootTimeout = 2 * time.Minute })
	e.gl.TokenLifetime = 3 * time.Minute
	_, err := e.f.Register(context.Background(), forge.RunnerSpec{Name: "fa-h-3", Labels: []string{"linux"}, Guest: guestOpts})
	if err == nil || !strings.Contains(err.Error(), "expires") {
		t.Fatalf("err = %v", err)
	}
	if n := len(e.gl.Runners()); n != 0 {
		t.Fatalf("%d runners left after a refused token", n)
	}
}

func TestRunnersListsTheScopesRunnersOfTheOwner(t *testing.T) {
	e := newEnv(t, Scope{Kind: ScopeGroup, Path: "acme"})
	owner, _ := forge.NewOwner("h")
	a, b := owner.RunnerName("00000000000a"), owner.RunnerName("00000000000b")
	e.register(t, a, "linux")
	e.register(t, b, "linux")
	rs, err := e.f.Runners(context.Background(), owner)
	if err != nil || len(rs) != 2 || rs[0].Name != a || rs[1].Name != b {
		t.Fatalf("Runners = %+v, %v", rs, err)
	}
	other, _ := forge.NewOwner("other")
	if rs, _ := e.f.Runners(context.Background(), other); len(rs) != 0 {
		t.Fatalf("another host's owner was handed %+v", rs)
	}
}

// Hosts a, a-b and a-b-c share one GitLab group: each sweeps exactly its
// own runners (issue 23: "fa-a-" starts every runner name of host a-b).
// GitLab holds the name as the first word of the runner's description.
func TestSweepTakesExactlyTheHostsOwnRunners(t *testing.T) {
	forgetest.SweepsExactlyItsOwn(t, func(t *testing.T) forgetest.SweepCase {
		e := newEnv(t, Scope{Kind: ScopeGroup, Path: "acme"})
		return forgetest.SweepCase{
			Forge: e.f,
			Spec: func(name string) forge.RunnerSpec {
				return forge.RunnerSpec{Name: name, Labels: []string{"linux"}, Guest: guestOpts}
			},
			Left: func() []string {
				var out []string
				for _, r := range e.gl.Runners() {
					name, _, _ := strings.Cut(r.Description, " ")
					out = append(out, name)
				}
				return out
			},
		}
	})
}

// TestRemoveIsIdempotentAndFallsBackToTheRunnersToken: a token that may
// not DELETE /runners/:id still gets the runner removed, with its own
// token.
func TestRemoveIsIdempotentAndFallsBackToTheRunnersToken(t *testing.T) {
	e := newEnv(t, Scope{Kind: ScopeProject, Path: "acme/app"})
	ctx := context.Background()
	a := e.register(t, "fa-h-a", "linux")
	if err := e.f.Remove(ctx, a.RunnerRef); err != nil {
		t.Fatal(err)
	}
	if err := e.f.Remove(ctx, a.RunnerRef); err != nil {
		t.Fatalf("removing a gone runner: %v", err)
	}
	b := e.register(t, "fa-h-b", "linux")
	e.gl.Inject(gitlabdouble.Fault{Method: "DELETE", Path: "/runners/" + b.ID, Status: 403})
	if err := e.f.Remove(ctx, b.RunnerRef); err != nil {
		t.Fatalf("remove with a 403 on DELETE /runners/:id: %v", err)
	}
	if n := len(e.gl.Runners()); n != 0 {
		t.Fatalf("%d runners left", n)
	}
	if !slices.Contains(e.gl.Calls(), "DELETE /api/v4/runners") {
		t.Fatal("no DELETE /runners with the runner's token")
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	for _, o := range []Options{
		{URL: "gitlab.example.com", Token: "t", Scope: Scope{Kind: ScopeInstance}},
		{URL: "https://g", Token: "t", Scope: Scope{Kind: "org"}},
		{URL: "https://g", Token: "t", Scope: Scope{Kind: ScopeGroup}},
		{URL: "https://g", Scope: Scope{Kind: ScopeInstance}},
		{URL: "https://g", Token: "t", Scope: Scope{Kind: ScopeInstance}, Runner: RunnerSettings{Executor: "kubernetes"}},
	} {
		if _, err := New(o); err == nil {
			t.Errorf("New(%+v) accepted", o)
		}
	}
}
