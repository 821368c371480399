package github_test

import (
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/forge"
	"github.com/nixos-fireactions/nixos-fireactions/forge/forgetest"
	"github.com/nixos-fireactions/nixos-fireactions/forge/github"
	"github.com/nixos-fireactions/nixos-fireactions/internal/double/githubdouble"
)

// At each scope the App finds its installation (at enterprise scope a
// classic PAT acts: GitHub takes no App there), registers a JIT runner
// with the pool's labels and group, hands the guest exactly that runner's
// configuration (in the runner's environment, on no command line), lists
// it, and removes it; removing it again is no error.
func TestJITRunnersAtEveryScope(t *testing.T) {
	for _, tc := range []struct {
		name      string
		install   func(d *githubdouble.Double)
		scope     github.Scope
		wantScope string
	}{
		{"org", func(d *githubdouble.Double) { d.AddInstallation("Organization", "acme") },
			github.Scope{Kind: "org", Org: "acme"}, "org:acme"},
		{"repo", func(d *githubdouble.Double) { d.AddInstallation("User", "octo", "octo/app") },
			github.Scope{Kind: "repo", Owner: "octo", Repo: "app"}, "repo:octo/app"},
		{"enterprise", func(d *githubdouble.Double) {
			d.AddInstallation("Organization", "acme")
			d.AddInstallation("Enterprise", "bigco")
		},
			github.Scope{Kind: "enterprise", Enterprise: "bigco"}, "enterprise:bigco"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, envOptions{pats: []string{"ghp_enterprise"}})
			tc.install(e.d)
			c := e.app()
			if tc.scope.Kind == "enterprise" {
				c = e.pat("ghp_enterprise")
			}
			p := e.pool(c, github.PoolOptions{Scope: tc.scope, Labels: []string{"linux", "self-hosted"}})
			ctx := context.Background()
			owner, _ := forge.NewOwner("h")
			name := owner.RunnerName("0123456789ab")
			r, err := p.Register(ctx, forge.RunnerSpec{Name: name, Labels: []string{"linux", "self-hosted"}, Guest: guest})
			if err != nil {
				t.Fatal(err)
			}
			rs := e.d.Runners()
			if len(rs) != 1 || rs[0].Scope != tc.wantScope || rs[0].Name != name ||
				strings.Join(rs[0].Labels, ",") != "linux,self-hosted" || rs[0].Group != 1 {
				t.Fatalf("double holds %+v", rs)
			}
			if r.ID != strconv.FormatInt(rs[0].ID, 10) || r.Name != name {
				t.Fatalf("runner ref %+v", r.RunnerRef)
			}
			_, jit := e.d.JIT(rs[0].ID)
			g := r.Guest
			if len(g.Env) != 1 || g.Env[0] != github.JITConfigEnv+"="+jit {
				t.Fatalf("guest env does not hold exactly the runner's JIT configuration: %d entries", len(g.Env))
			}
			if strings.Contains(strings.Join(g.Command, " "), jit) || len(g.Files) != 0 {
				t.Fatal("the JIT configuration is on the command line or in a file")
			}
			if g.Command[0] != "/home/runner/run.sh" || g.User != "runner" || g.UID != 1001 || g.WorkDir != "/home/runner" ||
				g.ReadyLine != "Listening for Jobs" || g.BusyLine != "Running job:" || g.Forge != "github" {
				t.Fatalf("guest plan %+v", g)
			}
			listed, err := p.Runners(ctx, owner)
			if err != nil || len(listed) != 1 || listed[0].ID != r.ID || listed[0].Busy {
				t.Fatalf("Runners = %+v, %v", listed, err)
			}
			other, _ := forge.NewOwner("other")
			if rs, _ := p.Runners(ctx, other); len(rs) != 0 {
				t.Fatalf("another host's owner was handed %+v", rs)
			}
			if err := p.Remove(ctx, r.RunnerRef); err != nil {
				t.Fatal(err)
			}
			if err := p.Remove(ctx, r.RunnerRef); err != nil {
				t.Fatalf("removing a gone runner: %v", err)
			}
			if n := len(e.d.Runners()); n != 0 {
				t.Fatalf("%d runners left", n)
			}
			e.noSecretsLogged()
		})
	}
}

// Hosts a, a-b and a-b-c share one GitHub org: each sweeps exactly its
// own runners (issue 23: "fa-a-" starts every runner name of host a-b).
func TestSweepTakesExactlyTheHostsOwnRunners(t *testing.T) {
	forgetest.SweepsExactlyItsOwn(t, func(t *testing.T) forgetest.SweepCase {
		e := newEnv(t, envOptions{})
		e.d.AddInstallation("Organization", "acme")
		p := e.pool(e.app(), github.PoolOptions{Scope: github.Scope{Kind: "org", Org: "acme"}, Labels: []string{"linux"}})
		return forgetest.SweepCase{
			Forge: p,
			Spec: func(name string) forge.RunnerSpec {
				return forge.RunnerSpec{Name: name, Labels: []string{"linux"}, Guest: guest}
			},
			Left: func() []string {
				var out []string
				for _, r := range e.d.Runners() {
					out = append(out, r.Name)
				}
				return out
			},
		}
	})
}

// A runner group named in an org is looked up once; a numeric one is
// used as given; other scopes refuse names they cannot look up.
func TestRunnerGroups(t *testing.T) {
	e := newEnv(t, envOptions{pats: []string{"ghp_enterprise"}})
	e.d.AddInstallation("Organization", "acme")
	gid := e.d.AddRunnerGroup("acme", "ci")
	c := e.app()
	ctx := context.Background()
	p := e.pool(c, github.PoolOptions{Scope: github.Scope{Kind: "org", Org: "acme"}, Labels: []string{"linux"}, Group: "CI"})
	for i := range 2 {
		if _, err := p.Register(ctx, forge.RunnerSpec{Name: fmt.Sprint("fa-h-", i), Labels: []string{"linux"}, Guest: guest}); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range e.d.Runners() {
		if r.Group != gid {
			t.Fatalf("runner %s in group %d, want %d", r.Name, r.Group, gid)
		}
	}
	if n := e.d.Calls()["actions/list-self-hosted-runner-groups-for-org"]; n != 1 {
		t.Fatalf("groups listed %d times, want once", n)
	}
	missing := e.pool(c, github.PoolOptions{Scope: github.Scope{Kind: "org", Org: "acme"}, Labels: []string{"linux"}, Group: "nope"})
	if _, err := missing.Register(ctx, forge.RunnerSpec{Name: "fa-h-x", Labels: []string{"linux"}, Guest: guest}); err == nil ||
		!strings.Contains(err.Error(), `no runner group "nope"`) {
		t.Fatalf("unknown group: %v", err)
	}
	ent := e.pool(e.pat("ghp_enterprise"), github.PoolOptions{Scope: github.Scope{Kind: "enterprise", Enterprise: "bigco"}, Labels: []string{"linux"}, Group: "77"})
	if _, err := ent.Register(ctx, forge.RunnerSpec{Name: "fa-h-e", Labels: []string{"linux"}, Guest: guest}); err != nil {
		t.Fatal(err)
	}
	for _, r := range e.d.Runners() {
		if r.Name == "fa-h-e" && r.Group != 77 {
			t.Fatalf("enterprise runner in group %d, want 77", r.Group)
		}
	}
	if _, err := e.pat("ghp_enterprise").Pool(github.PoolOptions{Scope: github.Scope{Kind: "enterprise", Enterprise: "bigco"},
		Labels: []string{"l"}, Group: "ci"}); err == nil {
		t.Error("an enterprise group by name accepted")
	}
	for _, bad := range []github.PoolOptions{
		{Scope: github.Scope{Kind: "repo", Owner: "acme", Repo: "x"}, Labels: []string{"l"}, Group: "ci"},
		{Scope: github.Scope{Kind: "instance"}, Labels: []string{"l"}},
	} {
		if _, err := c.Pool(bad); err == nil {
			t.Errorf("pool %+v accepted", bad)
		}
	}
}

// A personal access token works instead of an App; a wrong one fails
// with GitHub's 401, and the error does not hold the token.
func TestPersonalAccessToken(t *testing.T) {
	e := newEnv(t, envOptions{pats: []string{"ghp_goodtoken"}})
	ctx := context.Background()
	c, err := github.New(github.Options{Name: "gh", URL: e.url, Token: "ghp_goodtoken", Retry: fastRetry})
	if err != nil {
		t.Fatal(err)
	}
	p := e.pool(c, github.PoolOptions{Scope: github.Scope{Kind: "repo", Owner: "octo", Repo: "app"}, Labels: []string{"linux"}})
	r, err := p.Register(ctx, forge.RunnerSpec{Name: "fa-h-1", Labels: []string{"linux"}, Guest: guest})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Remove(ctx, r.RunnerRef); err != nil {
		t.Fatal(err)
	}
	bad, _ := github.New(github.Options{Name: "gh", URL: e.url, Token: "ghp_wrongtoken", Retry: fastRetry})
	_, err = e.pool(bad, github.PoolOptions{Scope: github.Scope{Kind: "repo", Owner: "octo", Repo: "app"}, Labels: []string{"l"}}).Runners(ctx, forge.Owner{})
	if err == nil || !strings.Contains(err.Error(), "401") || strings.Contains(err.Error(), "ghp_wrongtoken") {
		t.Fatalf("wrong token: %v", err)
	}
	if _, err := github.New(github.Options{URL: e.url, Token: "t", AppID: 1, AppPrivateKey: testKeyPEM()}); err == nil {
		t.Fatal("token and App both accepted")
	}
}

// GitHub Enterprise Server: the API under /api/v3 over HTTPS whose
// certificate only a custom CA vouches for.
func TestEnterpriseServerWithCustomCA(t *testing.T) {
	e := newEnv(t, envOptions{tls: true, prefix: "/api/v3"})
	e.d.AddInstallation("Organization", "acme")
	scope := github.PoolOptions{Scope: github.Scope{Kind: "org", Org: "acme"}, Labels: []string{"linux"}}
	ctx := context.Background()

	untrusted := e.pool(e.app(), scope)
	if _, err := untrusted.Runners(ctx, forge.Owner{}); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("without the CA: %v", err)
	}
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pemCert(e.srv.Certificate().Raw), 0o644); err != nil {
		t.Fatal(err)
	}
	p := e.pool(e.app(func(o *github.Options) { o.CAFile = ca }), scope)
	r, err := p.Register(ctx, forge.RunnerSpec{Name: "fa-h-1", Labels: []string{"linux"}, Guest: guest})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Remove(ctx, r.RunnerRef); err != nil {
		t.Fatal(err)
	}
	if e.d.Calls()["actions/generate-runner-jitconfig-for-org"] != 1 || e.d.TokenRequests() != 1 {
		t.Fatalf("calls %v", e.d.Calls())
	}
	if _, err := github.New(github.Options{URL: e.url, Token: "t", CAFile: filepath.Join(t.TempDir(), "missing.pem")}); err == nil {
		t.Fatal("a missing ca_file accepted")
	}
}

// Installation tokens are reused while fresh and replaced in their last
// minute, before they expire.
func TestInstallationTokenRefreshedBeforeExpiry(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		ttl        time.Duration
		wantTokens int
	}{
		{time.Hour, 1},
		{61 * time.Second, 2}, // in its last minute after a second
	} {
		e := newEnv(t, envOptions{tokenTTL: tc.ttl})
		e.d.AddInstallation("Organization", "acme")
		p := e.pool(e.app(), github.PoolOptions{Scope: github.Scope{Kind: "org", Org: "acme"}, Labels: []string{"l"}})
		for i := range 2 {
			if i > 0 {
				time.Sleep(1100 * time.Millisecond)
			}
			if _, err := p.Register(ctx, forge.RunnerSpec{Name: fmt.Sprint("fa-h-", i), Labels: []string{"l"}, Guest: guest}); err != nil {
				t.Fatal(err)
			}
		}
		if n := e.d.TokenRequests(); n != tc.wantTokens {
			t.Errorf("token lifetime %s: %d tokens for 2 calls a second apart, want %d", tc.ttl, n, tc.wantTokens)
		}
	}
}

// When the App is reinstalled its old installation is gone: the next call
// is refused, the installation is looked up again and the call succeeds.
// A configured installation id cannot be looked up again: the error says
// so.
func TestReinstalledAppIsLookedUpAgain(t *testing.T) {
	e := newEnv(t, envOptions{})
	old := e.d.AddInstallation("Organization", "acme")
	p := e.pool(e.app(), github.PoolOptions{Scope: github.Scope{Kind: "org", Org: "acme"}, Labels: []string{"l"}})
	ctx := context.Background()
	if _, err := p.Register(ctx, forge.RunnerSpec{Name: "fa-h-1", Labels: []string{"l"}, Guest: guest}); err != nil {
		t.Fatal(err)
	}
	e.d.Uninstall(old)
	e.d.AddInstallation("Organization", "acme")
	if _, err := p.Register(ctx, forge.RunnerSpec{Name: "fa-h-2", Labels: []string{"l"}, Guest: guest}); err != nil {
		t.Fatalf("after reinstalling: %v", err)
	}
	if n := e.d.Calls()["apps/get-org-installation"]; n != 2 {
		t.Fatalf("installation looked up %d times, want 2", n)
	}
	if !strings.Contains(e.log.String(), "looking it up again") {
		t.Fatal("the dropped installation was not logged")
	}

	fixed := newEnv(t, envOptions{})
	id := fixed.d.AddInstallation("Organization", "acme")
	fp := fixed.pool(fixed.app(func(o *github.Options) { o.InstallationID = id }), github.PoolOptions{Scope: github.Scope{Kind: "org", Org: "acme"}, Labels: []string{"l"}})
	if _, err := fp.Register(ctx, forge.RunnerSpec{Name: "fa-h-1", Labels: []string{"l"}, Guest: guest}); err != nil {
		t.Fatal(err)
	}
	if fixed.d.Calls()["apps/get-org-installation"] != 0 {
		t.Fatal("a configured installation was looked up")
	}
	fixed.d.Uninstall(id)
	if _, err := fp.Register(ctx, forge.RunnerSpec{Name: "fa-h-2", Labels: []string{"l"}, Guest: guest}); err == nil {
		t.Fatal("a gone configured installation still works")
	}
}

// A spent budget is waited out until GitHub's reset when that is soon,
// and fails at once, without a call, when it is not.
func TestPrimaryRateLimitIsWaitedOut(t *testing.T) {
	e := newEnv(t, envOptions{pats: []string{"ghp_t"}})
	ctx := context.Background()
	c, _ := github.New(github.Options{Name: "gh", URL: e.url, Token: "ghp_t", Retry: fastRetry})
	p := e.pool(c, github.PoolOptions{Scope: github.Scope{Kind: "repo", Owner: "o", Repo: "r"}, Labels: []string{"l"}})
	if got := p.RateLimitRemaining(); got != -1 {
		t.Fatalf("budget before any call = %d, want -1", got)
	}
	e.d.SetRateLimit(2, 2*time.Second)
	start := time.Now()
	for i := range 3 {
		if _, err := p.Register(ctx, forge.RunnerSpec{Name: fmt.Sprint("fa-h-", i), Labels: []string{"l"}, Guest: guest}); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	if time.Since(start) < time.Second {
		t.Fatalf("3 calls on a budget of 2 took %s: the reset was not waited for", time.Since(start))
	}
	if got := p.RateLimitRemaining(); got != 1 {
		t.Fatalf("budget after the reset and one call = %d, want 1", got)
	}

	e.d.SetRateLimit(1, time.Hour)
	if _, err := p.Register(ctx, forge.RunnerSpec{Name: "fa-h-x", Labels: []string{"l"}, Guest: guest}); err != nil {
		t.Fatal(err)
	}
	before := e.d.TotalCalls()
	_, err := p.Register(ctx, forge.RunnerSpec{Name: "fa-h-y", Labels: []string{"l"}, Guest: guest})
	if err == nil || !strings.Contains(err.Error(), "rate limit") {
		t.Fatalf("an hour-long limit: %v", err)
	}
	if e.d.TotalCalls() != before {
		t.Fatal("a call was sent on a spent budget")
	}
}

// With 30 % of calls failing (502, no answer, the answer lost after
// acting, 429 with Retry-After) registering and removing still work, and
// no runner is left behind: a lost answer's runner is replaced.
func TestFaultsAreRetriedAndLeakNoRunner(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.d.AddInstallation("Organization", "acme")
	e.d.SetFaults(githubdouble.Faults{Rate: 0.3, Kinds: githubdouble.AllFaults, Hang: 2 * time.Second})
	p := e.pool(e.app(func(o *github.Options) { o.Retry = faultRetry }), github.PoolOptions{Scope: github.Scope{Kind: "org", Org: "acme"}, Labels: []string{"l"}})
	ctx := context.Background()
	for i := range 20 {
		r, err := p.Register(ctx, forge.RunnerSpec{Name: fmt.Sprint("fa-h-", i), Labels: []string{"l"}, Guest: guest})
		if err != nil {
			t.Fatalf("register %d: %v", i, err)
		}
		if err := p.Remove(ctx, r.RunnerRef); err != nil {
			t.Fatalf("remove %d: %v", i, err)
		}
	}
	if rs := e.d.Runners(); len(rs) != 0 {
		t.Fatalf("runners left: %+v", rs)
	}
	counts := e.d.FaultCounts()
	for _, k := range githubdouble.AllFaults {
		if counts[k] == 0 {
			t.Errorf("no %s fault was injected: %v", k, counts)
		}
	}
	t.Logf("faults injected: %v; calls: %d", counts, e.d.TotalCalls())
	e.noSecretsLogged()
}

// When registering fails for good after GitHub created the runner (its
// answer lost), the runner is removed all the same.
func TestFailedRegistrationLeavesNoRunner(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.d.AddInstallation("Organization", "acme")
	e.d.SetFaults(githubdouble.Faults{Rate: 1, Kinds: []githubdouble.FaultKind{githubdouble.FaultLostAnswer},
		Only: []string{"actions/generate-runner-jitconfig-for-org"}, Hang: 2 * time.Second})
	p := e.pool(e.app(func(o *github.Options) { o.Retry = faultRetry; o.Retry.Attempts = 1 }), github.PoolOptions{Scope: github.Scope{Kind: "org", Org: "acme"}, Labels: []string{"l"}})
	_, err := p.Register(context.Background(), forge.RunnerSpec{Name: "fa-h-1", Labels: []string{"l"}, Guest: guest})
	if err == nil {
		t.Fatal("register succeeded without an answer")
	}
	if e.d.Calls()["actions/generate-runner-jitconfig-for-org"] != 1 {
		t.Fatalf("calls %v", e.d.Calls())
	}
	if rs := e.d.Runners(); len(rs) != 0 {
		t.Fatalf("the half-registered runner was left: %+v", rs)
	}
}

func pemCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// A credential GitHub refuses on the scope's runner API (a classic token
// without the scope's scope: 404; an App without the permission: 403)
// fails registration with what the scope needs, and leaves no runner; a
// credential holding it registers (positive control).
func TestARefusedCredentialIsToldWhatTheScopeNeeds(t *testing.T) {
	e := newEnv(t, envOptions{pats: []string{"ghp_repo", "ghp_org"},
		patScopes: map[string][]string{"ghp_repo": {"repo"}, "ghp_org": {"admin:org"}}})
	inst := e.d.AddInstallation("Organization", "acme")
	org := github.PoolOptions{Scope: github.Scope{Kind: "org", Org: "acme"}, Labels: []string{"linux"}}
	repo := github.PoolOptions{Scope: github.Scope{Kind: "repo", Owner: "acme", Repo: "widgets"}, Labels: []string{"linux"}}
	register := func(p *github.Pool, name string) error {
		_, err := p.Register(context.Background(), forge.RunnerSpec{Name: name, Labels: []string{"linux"}, Guest: guest})
		return err
	}
	if err := register(e.pool(e.pat("ghp_repo"), org), "fa-r-1"); err == nil || !strings.Contains(err.Error(), "404") || !strings.Contains(err.Error(), "admin:org") {
		t.Fatalf("org pool, a token with repo only: %v; want the 404 and admin:org named", err)
	}
	if err := register(e.pool(e.pat("ghp_org"), org), "fa-r-2"); err != nil {
		t.Fatalf("org pool, a token with admin:org: %v", err)
	}
	e.d.SetPermissions(inst, map[string]string{"actions": "read"})
	if err := register(e.pool(e.app(), repo), "fa-r-3"); err == nil || !strings.Contains(err.Error(), "403") || !strings.Contains(err.Error(), "Administration: read and write") {
		t.Fatalf("repo pool, an App without Administration: %v; want the 403 and the permission named", err)
	}
	if rs := e.d.Runners(); len(rs) != 1 || rs[0].Name != "fa-r-2" {
		t.Fatalf("runners %+v; want only fa-r-2", rs)
	}
}

// GitHub takes no App installation token on the enterprise runner API
// (x-github.enabledForGitHubApps: false): the App's enterprise pool is
// refused up front, naming why; a PAT's is taken (positive control).
func TestEnterprisePoolNeedsAPAT(t *testing.T) {
	e := newEnv(t, envOptions{pats: []string{"ghp_enterprise"}})
	e.d.AddInstallation("Enterprise", "bigco")
	scope := github.PoolOptions{Scope: github.Scope{Kind: "enterprise", Enterprise: "bigco"}, Labels: []string{"linux"}}
	if _, err := e.app().Pool(scope); !errors.Is(err, github.ErrEnterpriseNeedsPAT) || !strings.Contains(err.Error(), "manage_runners:enterprise") {
		t.Fatalf("App + enterprise: %v", err)
	}
	p := e.pool(e.pat("ghp_enterprise"), scope)
	if _, err := p.Register(context.Background(), forge.RunnerSpec{Name: "fa-h-1", Labels: []string{"linux"}, Guest: guest}); err != nil {
		t.Fatalf("PAT + enterprise: %v", err)
	}
}
