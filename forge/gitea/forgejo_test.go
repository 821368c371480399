package gitea

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/nixos-fireactions/nixos-fireactions/forge"
	"github.com/nixos-fireactions/nixos-fireactions/forge/forgetest"
	"github.com/nixos-fireactions/nixos-fireactions/internal/double/forgejodouble"
)

// forgejoTokens are the double's API tokens: a site admin's and an org
// owner's, each with the scopes Forgejo asks of its routes.
var forgejoTokens = map[string]forgejodouble.Token{
	"ADMIN-TOKEN": {Scopes: []string{"write:admin"}, SiteAdmin: true},
	"ORG-TOKEN":   {Scopes: []string{"write:organization"}, OrgOwner: []string{"acme"}},
	"REPO-TOKEN":  {Scopes: []string{"write:repository"}, RepoOwner: []string{"acme/app"}},
}

// serveForgejo serves d, counting the flavor probes.
func serveForgejo(t *testing.T, d *forgejodouble.Double) (*httptest.Server, *atomic.Int32) {
	var probes atomic.Int32
	h := d.Handler()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == forgejoVersionPath {
			probes.Add(1)
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv, &probes
}

func newForgejoDriver(t *testing.T, url, token, flavor string, scope Scope) *Forge {
	t.Helper()
	if scope.Labels == nil {
		scope.Labels = []string{"linux", "x64"}
	}
	f, err := New(Options{URL: url, GuestURL: "http://10.0.0.1:3000", Token: token, Scope: scope, Version: "test", Flavor: flavor})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

var forgejoScopes = []struct {
	scope Scope
	token string
	path  string // where the registration token is asked for
}{
	{Scope{Kind: "instance"}, "ADMIN-TOKEN", "/api/v1/admin/actions/runners/registration-token"},
	{Scope{Kind: "org", Org: "acme"}, "ORG-TOKEN", "/api/v1/orgs/acme/actions/runners/registration-token"},
	{Scope{Kind: "repo", Owner: "acme", Repo: "app"}, "REPO-TOKEN", "/api/v1/repos/acme/app/actions/runners/registration-token"},
}

// On Forgejo the registration token is a GET at Forgejo's paths, and the
// guest runs forgejo-runner's one-job mode.
func TestForgejoRegister(t *testing.T) {
	for _, tc := range forgejoScopes {
		t.Run(tc.scope.Kind, func(t *testing.T) {
			d := forgejodouble.New(forgejoTokens)
			srv, probes := serveForgejo(t, d)
			f := newForgejoDriver(t, srv.URL, tc.token, FlavorAuto, tc.scope)
			r, err := f.Register(context.Background(), forge.RunnerSpec{Name: "fa-h-1", Labels: []string{"linux"}, Guest: guestOpts})
			if err != nil {
				t.Fatal(err)
			}
			if got := d.Calls(); len(got) == 0 || got[0] != "GET "+tc.path {
				t.Fatalf("calls %q, want GET %s first", got, tc.path)
			}
			if names := d.Runners(); len(names) != 1 {
				t.Fatalf("runners at Forgejo: %v", names)
			}
			g := r.Guest
			if want := []string{guestOpts.AgentPath, "one-job", "--config", "/home/runner/config.yaml"}; !slices.Equal(g.Command, want) {
				t.Errorf("command %q, want %q", g.Command, want)
			}
			if g.ReadyLine != "declared successfully" {
				t.Errorf("ready line %q", g.ReadyLine)
			}
			// The guest gets the runner's own token, never the scope's.
			for _, file := range g.Files {
				for _, secret := range []string{tc.token, "REG-"} {
					if strings.Contains(string(file.Content), secret) {
						t.Errorf("%s holds %q", file.Path, secret)
					}
				}
			}
			if _, err := f.Register(context.Background(), forge.RunnerSpec{Name: "fa-h-2", Labels: []string{"linux"}, Guest: guestOpts}); err != nil {
				t.Fatal(err)
			}
			if n := probes.Load(); n != 1 {
				t.Errorf("flavor asked %d times, want once", n)
			}
		})
	}
}

// Forgejo v12 has the instance's token only at /admin/runners: the
// driver falls back to it.
func TestForgejoV12InstancePaths(t *testing.T) {
	d := forgejodouble.NewV12(forgejoTokens)
	srv, _ := serveForgejo(t, d)
	f := newForgejoDriver(t, srv.URL, "ADMIN-TOKEN", FlavorAuto, Scope{Kind: "instance"})
	if _, err := f.Register(context.Background(), forge.RunnerSpec{Name: "fa-h-1", Labels: []string{"linux"}, Guest: guestOpts}); err != nil {
		t.Fatal(err)
	}
	d.SetJobs(forgejodouble.Job{ID: 5, Owner: "acme", Repo: "acme/app", RunsOn: []string{"linux"}, Status: "waiting"})
	jobs, err := f.QueuedJobs(context.Background())
	if err != nil || len(jobs) != 1 {
		t.Fatalf("jobs %v, %v", jobs, err)
	}
	// v12 lists no runners: nothing to sweep, and no error.
	owner, _ := forge.NewOwner("h")
	if rs, err := f.Runners(context.Background(), owner); err != nil || len(rs) != 0 {
		t.Fatalf("runners on v12: %v, %v", rs, err)
	}
}

// Demand on Forgejo: the job search with the pool's labels, waiting jobs
// only.
func TestForgejoQueuedJobs(t *testing.T) {
	d := forgejodouble.New(forgejoTokens)
	srv, _ := serveForgejo(t, d)
	d.SetJobs(
		forgejodouble.Job{ID: 1, RepoID: 9, Owner: "acme", Repo: "acme/app", RunsOn: []string{"linux"}, Status: "waiting"},
		forgejodouble.Job{ID: 2, RepoID: 9, Owner: "acme", Repo: "acme/app", RunsOn: []string{"linux"}, Status: "running"},
		forgejodouble.Job{ID: 3, RepoID: 9, Owner: "acme", Repo: "acme/app", RunsOn: []string{"gpu"}, Status: "waiting"},
		forgejodouble.Job{ID: 4, RepoID: 8, Owner: "other", Repo: "other/x", RunsOn: []string{"linux"}, Status: "waiting"},
	)
	f := newForgejoDriver(t, srv.URL, "ORG-TOKEN", FlavorAuto, Scope{Kind: "org", Org: "acme", Labels: []string{"linux", "x64"}})
	jobs, err := f.QueuedJobs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(jobs) != 1 || jobs[0].ID != "1" || !slices.Equal(jobs[0].Labels, []string{"linux"}) {
		t.Fatalf("jobs %+v, want job 1 only", jobs)
	}
	if got := d.Calls(); got[len(got)-1] != "GET /api/v1/orgs/acme/actions/runners/jobs?labels=linux%2Cx64" {
		t.Fatalf("last call %q", got[len(got)-1])
	}
}

// Runners and Remove on a Forgejo with the runner API.
func TestForgejoRunnersAndRemove(t *testing.T) {
	d := forgejodouble.New(forgejoTokens)
	srv, _ := serveForgejo(t, d)
	f := newForgejoDriver(t, srv.URL, "REPO-TOKEN", FlavorForgejo, Scope{Kind: "repo", Owner: "acme", Repo: "app"})
	owner, _ := forge.NewOwner("h")
	r, err := f.Register(context.Background(), forge.RunnerSpec{Name: owner.RunnerName(forge.NewVMID()), Labels: []string{"linux"}, Guest: guestOpts})
	if err != nil {
		t.Fatal(err)
	}
	other, _ := forge.NewOwner("elsewhere")
	if _, err := f.Register(context.Background(), forge.RunnerSpec{Name: other.RunnerName(forge.NewVMID()), Labels: []string{"linux"}, Guest: guestOpts}); err != nil {
		t.Fatal(err)
	}
	rs, err := f.Runners(context.Background(), owner)
	if err != nil || len(rs) != 1 || rs[0].ID != r.ID || rs[0].Online {
		t.Fatalf("runners %+v, %v; want only %s, offline", rs, err, r.ID)
	}
	if err := f.Remove(context.Background(), r.RunnerRef); err != nil {
		t.Fatal(err)
	}
	if err := f.Remove(context.Background(), r.RunnerRef); err != nil {
		t.Fatalf("second remove: %v", err)
	}
	if n := len(d.Runners()); n != 1 {
		t.Fatalf("%d runners left, want the other host's 1", n)
	}
}

// Spoken to as Gitea, Forgejo refuses both registration and demand: what
// the driver did before it knew Forgejo, and why the flavor matters.
func TestForgejoRefusesGiteaCalls(t *testing.T) {
	d := forgejodouble.New(forgejoTokens)
	srv, _ := serveForgejo(t, d)
	f := newForgejoDriver(t, srv.URL, "ORG-TOKEN", FlavorGitea, Scope{Kind: "org", Org: "acme"})
	if _, err := f.Register(context.Background(), forge.RunnerSpec{Name: "fa-h-1", Labels: []string{"linux"}, Guest: guestOpts}); err == nil || !strings.Contains(err.Error(), "405") {
		t.Errorf("register as gitea: %v, want 405", err)
	}
	if _, err := f.QueuedJobs(context.Background()); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("queued jobs as gitea: %v, want not found", err)
	}
}

// Detection: Gitea (no /api/forgejo) is gitea; a failed probe is not
// kept; a bad flavor is refused.
func TestFlavorDetection(t *testing.T) {
	_, gsrv := newFakeGitea(t)
	p, _ := newFlavorProbe(gsrv.URL, FlavorAuto, http.DefaultClient)
	if fl, err := p.flavor(context.Background(), "TOKEN"); err != nil || fl != FlavorGitea {
		t.Fatalf("gitea detected as %q, %v", fl, err)
	}
	var fail atomic.Bool
	fail.Store(true)
	fsrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if fail.Load() {
			http.Error(w, "starting", http.StatusBadGateway)
			return
		}
		w.Write([]byte(`{"version":"12.0.0"}`))
	}))
	t.Cleanup(fsrv.Close)
	p, _ = newFlavorProbe(fsrv.URL, FlavorAuto, http.DefaultClient)
	if _, err := p.flavor(context.Background(), "TOKEN"); err == nil || !strings.Contains(err.Error(), "502") {
		t.Fatalf("502 probe: %v", err)
	}
	fail.Store(false)
	if fl, err := p.flavor(context.Background(), "TOKEN"); err != nil || fl != FlavorForgejo {
		t.Fatalf("after the 502: %q, %v", fl, err)
	}
	if _, err := New(Options{URL: "http://x", Flavor: "gogs", Scope: Scope{Kind: "instance"}}); err == nil || !strings.Contains(err.Error(), "gogs") {
		t.Fatalf("flavor gogs: %v", err)
	}
}

// The sweep contract holds on Forgejo too: hosts a, a-b and a-b-c share
// one Forgejo org, each sweeps exactly its own runners.
func TestForgejoSweepTakesExactlyTheHostsOwnRunners(t *testing.T) {
	forgetest.SweepsExactlyItsOwn(t, func(t *testing.T) forgetest.SweepCase {
		d := forgejodouble.New(forgejoTokens)
		srv, _ := serveForgejo(t, d)
		return forgetest.SweepCase{
			Forge: newForgejoDriver(t, srv.URL, "ORG-TOKEN", FlavorAuto, Scope{Kind: "org", Org: "acme"}),
			Spec: func(name string) forge.RunnerSpec {
				return forge.RunnerSpec{Name: name, Labels: []string{"linux"}, Guest: guestOpts}
			},
			Left: func() []string {
				var out []string
				for _, n := range d.Runners() {
					out = append(out, n)
				}
				return out
			},
		}
	})
}

// A Forgejo that requires sign-in (REQUIRE_SIGNIN_VIEW) answers no
// anonymous API call, its version's neither: the flavor probe sends the
// scope's token, so such a Forgejo is still known for what it is.
func TestForgejoRequiringSignInIsDetected(t *testing.T) {
	d := forgejodouble.New(forgejoTokens)
	d.RequireSignIn()
	srv, probes := serveForgejo(t, d)
	resp, err := http.Get(srv.URL + forgejoVersionPath)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("anonymous GET %s: %s, want 403 (the double must refuse it)", forgejoVersionPath, resp.Status)
	}
	f := newForgejoDriver(t, srv.URL, "ORG-TOKEN", FlavorAuto, Scope{Kind: "org", Org: "acme"})
	if _, err := f.QueuedJobs(context.Background()); err != nil {
		t.Fatalf("queued jobs on a Forgejo requiring sign-in: %v", err)
	}
	if fj, err := f.forgejo(context.Background()); !fj || err != nil {
		t.Fatalf("flavor: forgejo %v, %v", fj, err)
	}
	if n := probes.Load(); n != 2 {
		t.Fatalf("%d flavor probes, want the anonymous one and the driver's", n)
	}
}

// An admin's reset of Forgejo's registration token: Forgejo refuses the
// old one (invalid_argument, "… has been invalidated …"), and the driver
// fetches a new one once and registers with it.
func TestForgejoRegistrationTokenRefreshedWhenReset(t *testing.T) {
	d := forgejodouble.New(forgejoTokens)
	srv, _ := serveForgejo(t, d)
	f := newForgejoDriver(t, srv.URL, "ADMIN-TOKEN", FlavorForgejo, Scope{Kind: "instance"})
	ctx := context.Background()
	if _, err := f.Register(ctx, forge.RunnerSpec{Name: "fa-h-1", Labels: []string{"linux"}, Guest: guestOpts}); err != nil {
		t.Fatal(err)
	}
	d.ResetRegistrationTokens()
	if _, err := f.Register(ctx, forge.RunnerSpec{Name: "fa-h-2", Labels: []string{"linux"}, Guest: guestOpts}); err != nil {
		t.Fatalf("register after a token reset: %v", err)
	}
	asked := 0
	for _, c := range d.Calls() {
		if strings.HasSuffix(c, "/registration-token") {
			asked++
		}
	}
	if n := len(d.Runners()); asked != 2 || n != 2 {
		t.Fatalf("token asked %d times, %d runners; want 2 (one refresh) and 2", asked, n)
	}
}

// A current Forgejo answers 404 to the runner listing of an org or repo
// that does not exist, as an old one (v12) answers 404 for its missing
// runner API. Only the old one means "nothing to list"; the other is an
// error naming the scope, or leftover runners would never be removed.
func TestForgejoListingAMissingScopeIsAnError(t *testing.T) {
	owner, _ := forge.NewOwner("h")
	for _, tc := range []struct {
		name   string
		v12    bool
		token  string
		scope  Scope
		errHas string // "": an empty listing, no error
	}{
		{"org that does not exist", false, "ORG-TOKEN", Scope{Kind: "org", Org: "ghost"}, "org ghost not found"},
		{"repo that does not exist", false, "REPO-TOKEN", Scope{Kind: "repo", Owner: "acme", Repo: "gone"}, "repo acme/gone not found"},
		{"v12, an org that exists", true, "ORG-TOKEN", Scope{Kind: "org", Org: "acme"}, ""},
		{"v12, a repo that exists", true, "REPO-TOKEN", Scope{Kind: "repo", Owner: "acme", Repo: "app"}, ""},
		{"v12, an org that does not exist", true, "ORG-TOKEN", Scope{Kind: "org", Org: "ghost"}, "org ghost not found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := forgejodouble.New(forgejoTokens)
			if tc.v12 {
				d = forgejodouble.NewV12(forgejoTokens)
			}
			srv, _ := serveForgejo(t, d)
			f := newForgejoDriver(t, srv.URL, tc.token, FlavorForgejo, tc.scope)
			rs, err := f.Runners(context.Background(), owner)
			switch {
			case tc.errHas == "" && (err != nil || len(rs) != 0):
				t.Fatalf("runners %v, %v; want none and no error", rs, err)
			case tc.errHas != "" && (err == nil || !strings.Contains(err.Error(), tc.errHas)):
				t.Fatalf("runners %v, error %v; want an error saying %q", rs, err, tc.errHas)
			}
		})
	}
}

// On Forgejo v12 every runner listing of an org or repo is a 404, and
// every pass lists: the org or repo behind it is read once per
// scopeRecheck, not at each pass.
func TestForgejoV12ReadsItsScopeOncePerRecheck(t *testing.T) {
	owner, _ := forge.NewOwner("h")
	d := forgejodouble.NewV12(forgejoTokens)
	srv, _ := serveForgejo(t, d)
	f := newForgejoDriver(t, srv.URL, "ORG-TOKEN", FlavorForgejo, Scope{Kind: "org", Org: "acme"})
	reads := func() int {
		n := 0
		for _, c := range d.Calls() {
			if c == "GET /api/v1/orgs/acme" {
				n++
			}
		}
		return n
	}
	list := func() {
		t.Helper()
		if rs, err := f.Runners(context.Background(), owner); err != nil || len(rs) != 0 {
			t.Fatalf("runners %v, %v; want none and no error", rs, err)
		}
	}
	for range 3 {
		list()
	}
	if n := reads(); n != 1 {
		t.Fatalf("three listings read the org %d times, want once; calls %q", n, d.Calls())
	}
	f.mu.Lock()
	f.scopeReadAt = f.scopeReadAt.Add(-scopeRecheck)
	f.mu.Unlock()
	list()
	if n := reads(); n != 2 {
		t.Fatalf("a listing past the recheck read the org %d times in all, want twice; calls %q", n, d.Calls())
	}
}
