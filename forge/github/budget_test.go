package github_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/forge"
	"github.com/nixos-fireactions/nixos-fireactions/forge/github"
)

// Two organisations under one App and one forge entry, each pool with its
// own installation_id (the forge's names the first): each registers in
// its own org with its own installation's token, and each installation
// has its own rate budget, apart from the App's: the first's spent budget
// neither delays nor fails the second's calls.
func TestTwoOrgsEachWithItsInstallationAndBudget(t *testing.T) {
	e := newEnv(t, envOptions{})
	acme := e.d.AddInstallation("Organization", "acme")
	globex := e.d.AddInstallation("Organization", "globex")
	c := e.app(func(o *github.Options) { o.InstallationID = acme })
	pa := e.pool(c, github.PoolOptions{Scope: github.Scope{Kind: "org", Org: "acme"}, Labels: []string{"l"}})
	pg := e.pool(c, github.PoolOptions{Scope: github.Scope{Kind: "org", Org: "globex"}, Labels: []string{"l"}, InstallationID: globex})
	ctx := context.Background()
	register := func(p *github.Pool, name string) error {
		_, err := p.Register(ctx, forge.RunnerSpec{Name: name, Labels: []string{"l"}, Guest: guest})
		return err
	}
	if err := register(pa, "fa-h-a0"); err != nil {
		t.Fatal(err)
	}
	if err := register(pg, "fa-h-g0"); err != nil {
		t.Fatalf("globex with its own installation: %v", err)
	}
	scopes := map[string]string{}
	for _, r := range e.d.Runners() {
		scopes[r.Name] = r.Scope
	}
	if scopes["fa-h-a0"] != "org:acme" || scopes["fa-h-g0"] != "org:globex" {
		t.Fatalf("runners %v", scopes)
	}
	if n := e.d.Calls()["apps/get-org-installation"]; n != 0 {
		t.Fatalf("%d installation lookups: the configured ones were not used", n)
	}

	// A budget of 3 calls an hour per credential.
	e.d.SetRateLimit(3, time.Hour)
	for i := range 3 {
		if err := register(pa, fmt.Sprint("fa-h-a", i+1)); err != nil && i < 2 {
			t.Fatalf("acme call %d: %v", i, err)
		}
	}
	if got := pa.RateLimitRemaining(); got != 0 {
		t.Fatalf("acme's budget = %d, want spent", got)
	}
	before := e.d.TotalCalls()
	if err := register(pa, "fa-h-a9"); err == nil || !strings.Contains(err.Error(), "rate limit") {
		t.Fatalf("acme on a spent hour-long budget: %v", err)
	}
	if e.d.TotalCalls() != before {
		t.Fatal("a call was sent on acme's spent budget")
	}
	start := time.Now()
	if err := register(pg, "fa-h-g1"); err != nil {
		t.Fatalf("globex after acme's budget was spent: %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("globex waited %s for acme's budget", d)
	}
	if a, g := pa.RateLimitRemaining(), pg.RateLimitRemaining(); a != 0 || g != 2 {
		t.Fatalf("budgets left: acme %d, globex %d; want 0 and 2", a, g)
	}
}

// The scale-set client's own calls to GitHub's REST API (here the
// registration token behind its admin connection) spend the pool's
// credential's budget like the driver's others, an App installation's or
// a token's: once that budget is spent, the call fails at once without
// being sent, rather than GitHub being asked again and again.
func TestScaleSetClientCallsSpendTheInstallationBudget(t *testing.T) {
	for _, cred := range []string{"app", "pat"} {
		t.Run(cred, func(t *testing.T) {
			e, acme := scaleSetEnvInst(t, envOptions{pats: []string{"ghp_acme"}})
			client := func() *github.Client {
				if cred == "pat" {
					return e.pat("ghp_acme")
				}
				return e.app(func(o *github.Options) { o.InstallationID = acme })
			}
			scaleSetPool := func(c *github.Client) *github.Pool {
				return e.pool(c, github.PoolOptions{Scope: github.Scope{Kind: "org", Org: "acme"}, Labels: []string{"self-hosted"},
					Demand: github.DemandScaleSet, PoolName: "small", HostID: "h1", MaxRunners: 2, ScaleSet: fastScaleSet})
			}
			c := client()
			hooks := e.pool(c, github.PoolOptions{Scope: github.Scope{Kind: "org", Org: "acme"}, Labels: []string{"l"}})
			e.d.SetRateLimit(2, time.Hour) // per credential
			ctx := context.Background()
			for i := range 2 { // the credential's two calls: spent
				if _, err := hooks.Register(ctx, forge.RunnerSpec{Name: fmt.Sprint("fa-h-", i), Labels: []string{"l"}, Guest: guest}); err != nil {
					t.Fatalf("register %d: %v", i, err)
				}
			}
			if got := hooks.RateLimitRemaining(); got != 0 {
				t.Fatalf("budget %d, want spent", got)
			}
			// A scale-set pool of the same credential, never listening (no
			// queue notifier): Register makes its client, which asks for a
			// registration token.
			_, err := scaleSetPool(c).Register(ctx, forge.RunnerSpec{Name: "vm-1"})
			if err == nil || !strings.Contains(err.Error(), "rate limit") {
				t.Fatalf("register on a spent budget: %v", err)
			}
			if n := e.d.Calls()["actions/create-registration-token-for-org"]; n != 0 {
				t.Fatalf("%d registration-token calls sent on the spent budget", n)
			}
			// Positive control: with a budget, the same pool registers.
			e.d.SetRateLimit(5000, time.Hour)
			if _, err := scaleSetPool(client()).Register(ctx, forge.RunnerSpec{Name: "vm-2"}); err != nil {
				t.Fatalf("register with a budget: %v", err)
			}
			if n := e.d.Calls()["actions/create-registration-token-for-org"]; n != 1 {
				t.Fatalf("%d registration-token calls, want 1", n)
			}
		})
	}
}
