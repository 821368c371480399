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
	// The doubles are found by their names: if a rename hid them all,
	// the double rule would hold nothing to account.
	var doubles []string
	for path := range g.Packages {
		if rel, ok := g.rel(path); ok && TestCode(rel) {
			doubles = append(doubles, rel)
		}
	}
	if len(doubles) < 3 {
		t.Errorf("only %v are test code by their names: the doubles are no longer recognised", doubles)
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
		"fcdouble and the other doubles: pool ! forge/forgetest",
		"fcdouble and the other doubles: pool ! testing",
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
		"forge/github/githubdouble":             true,
		"forge/github/githubdouble/openapi":     true,
		"forge/gitlab/gitlabtest/gitlab-runner": true,
		"vmm/firecracker/fcdouble/cmd/fcdouble": true,
		"forge/forgetest":                       true,
		"e2e/netprobe":                          true,
		"fakes/scaleset":                        true,
		"forge/github":                          false,
		"vmm/firecracker":                       false,
		"vmm/firecracker/apispec":               false,
		"agentproto":                            false,
	} {
		if TestCode(rel) != want {
			t.Errorf("TestCode(%s) = %v", rel, !want)
		}
	}
}
