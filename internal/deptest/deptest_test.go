package deptest

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

// TestImportRules holds the module, as the product is built, to the
// rules its package docs promise.
func TestImportRules(t *testing.T) {
	g, err := Load(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if g.Module != "github.com/nixos-fireactions/nixos-fireactions" {
		t.Fatalf("loaded module %s", g.Module)
	}
	for _, v := range Check(g, Rules()) {
		t.Error(v)
	}
	// The rules name packages by path: one that no longer exists binds
	// nothing, and its rule would pass unseen.
	for _, rel := range []string{"guest/agent", "cmd/fireactions-agent", "agentproto", "vmm/firecracker", "catalog", "cli"} {
		if _, ok := g.Packages[g.Module+"/"+rel]; !ok {
			t.Errorf("package %s, named by a rule, is not in the build", rel)
		}
	}
	for _, rel := range append(append(append([]string{}, vmmDrivers...), forgeDrivers...), append(wiring, commandLine...)...) {
		if _, ok := g.Packages[g.Module+"/"+rel]; !ok {
			t.Errorf("package %s, named by a rule, is not in the build", rel)
		}
	}
	// The doubles and test helpers are found by their paths: if a move or
	// rename hid one, the double rule would hold it to nothing.
	var rels []string
	for path := range g.Packages {
		if rel, ok := g.rel(path); ok {
			rels = append(rels, rel)
		}
	}
	for _, rel := range []string{
		DoublesTree + "/githubdouble", DoublesTree + "/githubdouble/openapi", DoublesTree + "/githubdouble/cmd/actions-runner",
		DoublesTree + "/gitlabdouble", DoublesTree + "/gitlabdouble/cmd/gitlab-runner",
		DoublesTree + "/giteadouble",
		DoublesTree + "/firecrackerdouble", DoublesTree + "/firecrackerdouble/cmd/firecracker",
		"internal/hosttest", "forge/forgetest", "fleet/fleettest",
	} {
		if _, ok := g.Packages[g.Module+"/"+rel]; !ok {
			t.Errorf("package %s, test code the rules know, is not in the build", rel)
		} else if !TestCode(rel) {
			t.Errorf("%s is not test code by its path: the doubles are no longer recognised", rel)
		}
	}
	// One tree, one naming: every double in DoublesTree, each <system>double.
	for _, bad := range DoubleNaming(rels) {
		t.Error(bad)
	}
}

// TestEveryRuleFailsWhenBroken runs the checker, on a real `go list`, over
// a fixture module (testdata/fixture) whose packages break each rule on
// purpose, and wants exactly those violations: each rule fires, and only
// where it should (the wiring, daemon, imports drivers and is let be; cli
// reaches none but the one it imports itself).
func TestEveryRuleFailsWhenBroken(t *testing.T) {
	g, err := Load(filepath.Join("testdata", "fixture"))
	if err != nil {
		t.Fatal(err)
	}
	rules := Rules()
	want := []string{
		"agentproto: agentproto ! config",
		"catalog: catalog ! example.com/sdk",
		"cli: daemon ! cli",
		"daemon: cli ! forge/github",
		"double: api ! internal/double/githubdouble",
		"double: pool ! forge/forgetest",
		"double: pool ! testing",
		"forge/forgehttp: forge/forgehttp ! example.com/sdk",
		"forge: pool ! forge/github",
		"guest/agent: cmd/fireactions-agent ! config",
		"guest/agent: guest/agent ! config",
		"vmm/firecracker: vmm/firecracker ! example.com/sdk",
		"vmm: pool ! vmm/qemu",
	}
	vs := Check(g, rules)
	var got []string
	fired := map[string]bool{}
	for _, v := range vs {
		short := strings.SplitN(v.Rule, ":", 2)[0]
		got = append(got, fmt.Sprintf("%s: %s ! %s", short, v.Pkg, v.Dep))
		fired[v.Rule] = true
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("violations:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for _, r := range rules {
		if !fired[r.Name] {
			t.Errorf("no package of the fixture breaks rule %q: it is not shown to fail", r.Name)
		}
	}
	// A violation names the import chain that brings the dependency in.
	for _, v := range vs {
		if v.Pkg == "cmd/fireactions-agent" {
			if chain := strings.Join(v.Via, " → "); chain != "cmd/fireactions-agent → guest/agent → agentproto → config" {
				t.Errorf("chain %s", chain)
			}
		}
	}
}

func TestTestCode(t *testing.T) {
	for rel, want := range map[string]bool{
		"internal/double/githubdouble":                      true,
		"internal/double/githubdouble/openapi":              true,
		"internal/double/gitlabdouble/cmd/gitlab-runner":    true,
		"internal/double/firecrackerdouble/cmd/firecracker": true,
		"internal/hosttest":                                 true,
		"internal/deptest":                                  true,
		"forge/forgetest":                                   true,
		"e2e/netprobe":                                      true,
		"vmm/firecracker/fcdouble":                          true, // a double put elsewhere is still test code
		"fakes/scaleset":                                    true,
		"internal/doublecheck":                              false,
		"images/latest":                                     false, // a name ending in "test" is no test helper
		"attest":                                            false,
		"internal/newtest":                                  false, // a helper not listed is held to the rules
		"forge/github":                                      false,
		"vmm/firecracker":                                   false,
		"vmm/firecracker/apispec":                           false,
		"agentproto":                                        false,
	} {
		if TestCode(rel) != want {
			t.Errorf("TestCode(%s) = %v", rel, !want)
		}
	}
}

// TestDoubleNaming: a double outside the tree, or one in it not named
// <system>double, is reported; the tree's own packages are not.
func TestDoubleNaming(t *testing.T) {
	got := DoubleNaming([]string{
		"internal/double/githubdouble",
		"internal/double/githubdouble/cmd/actions-runner",
		"internal/double/scalesetdouble",
		"internal/double/gitlabtest",
		"internal/double",
		"forge/github/githubdouble",
		"fakes/scaleset",
		"forge/forgetest",
		"internal/hosttest",
		"forge/github",
	})
	want := []string{
		"fakes/scaleset: a double lives in internal/double",
		"forge/github/githubdouble: a double lives in internal/double",
		"internal/double/gitlabtest: a double is named <system>double (internal/double/githubdouble)",
		"internal/double: the doubles' tree holds packages, not code of its own",
	}
	sameLines(t, "DoubleNaming", got, want)
}

// sameLines fails t unless got is want, line for line.
func sameLines(t *testing.T, what string, got, want []string) {
	t.Helper()
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("%s:\n%s\nwant:\n%s", what, strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
