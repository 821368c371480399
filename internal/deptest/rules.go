package deptest

import (
	"sort"
	"strings"
)

// guestThirdParty is what the guest may use beyond the standard library
// (guest/agent's doc): x/sys/unix and netlink, with netlink's own
// packages (nl, and netns, which it imports).
var guestThirdParty = []string{
	"golang.org/x/sys/unix",
	"github.com/vishvananda/netlink",
	"github.com/vishvananda/netlink/nl",
	"github.com/vishvananda/netns",
}

// vmmDrivers and forgeDrivers are the driver trees behind the two seams,
// inside the module.
var (
	vmmDrivers   = []string{"vmm/qemu", "vmm/firecracker"}
	forgeDrivers = []string{"forge/gitea", "forge/github", "forge/gitlab"}
)

// wiring is the package that chooses the drivers the daemon runs: the
// only one that may import a driver. The command line (cli, and
// cmd/fireactions above it) depends on the drivers only through it.
var (
	wiring      = []string{"daemon"}
	commandLine = []string{"cli", "cmd/fireactions"}
)

// Rules are the import rules the package docs promise.
func Rules() []Rule {
	return []Rule{
		{
			Name:  "guest/agent: the guest agent imports only the standard library, x/sys/unix, netlink and agentproto",
			Binds: is("guest/agent", "cmd/fireactions-agent"),
			Allows: func(d Dep) bool {
				return d.Standard || d.Rel == "agentproto" || d.Rel == "guest/agent" || oneOf(d.Path, guestThirdParty)
			},
		},
		{
			Name:  "agentproto: the one package host and guest share stays free of host-only imports",
			Binds: is("agentproto"),
			Allows: func(d Dep) bool {
				return d.Standard || oneOf(d.Path, guestThirdParty)
			},
		},
		{
			Name:  "double: nothing in the product imports a double of an external system (internal/double), a test helper or the testing package",
			Binds: func(rel string) bool { return !TestCode(rel) },
			Allows: func(d Dep) bool {
				return d.Path != "testing" && (d.Rel == "" || !TestCode(d.Rel))
			},
		},
		{
			Name: "vmm: nothing in the orchestrator but its driver (and the wiring that picks it) knows which monitor runs the guest",
			Binds: func(rel string) bool {
				return !TestCode(rel) && !under(rel, vmmDrivers) && !oneOf(rel, wiring) && !oneOf(rel, commandLine)
			},
			Allows: func(d Dep) bool {
				return d.Rel == "" || !under(d.Rel, vmmDrivers)
			},
		},
		{
			Name: "forge: the pool manager and the rest of the orchestrator reach a forge through the seam; only the wiring picks a driver",
			Binds: func(rel string) bool {
				return !TestCode(rel) && !under(rel, forgeDrivers) && !oneOf(rel, wiring) && !oneOf(rel, commandLine)
			},
			Allows: func(d Dep) bool {
				return d.Rel == "" || !under(d.Rel, forgeDrivers)
			},
		},
		{
			Name:   "daemon: only the daemon picks a driver; the command line imports none itself and reaches them through the daemon",
			Binds:  is(commandLine...),
			Direct: true,
			Allows: func(d Dep) bool {
				return d.Rel == "" || (!under(d.Rel, vmmDrivers) && !under(d.Rel, forgeDrivers))
			},
		},
		{
			Name:  "cli: only cmd/ imports the command line; the daemon and the rest of the product never do",
			Binds: func(rel string) bool { return !TestCode(rel) && rel != "cli" && !strings.HasPrefix(rel, "cmd/") },
			Allows: func(d Dep) bool {
				return d.Rel != "cli"
			},
		},
		{
			Name:  "catalog: the driver names depend on the standard library only, so config takes them without the drivers",
			Binds: is("catalog"),
			Allows: func(d Dep) bool {
				return d.Standard
			},
		},
		{
			Name:  "forge/forgehttp: the forges' shared HTTP connection depends on the standard library only; the forge drivers import it, it imports none of them",
			Binds: is("forge/forgehttp"),
			Allows: func(d Dep) bool {
				return d.Standard
			},
		},
		{
			Name:  "vmm/firecracker: the driver talks to Firecracker with a small client of its own and adds no dependency",
			Binds: is("vmm/firecracker"),
			Allows: func(d Dep) bool {
				return d.Standard || d.Rel != "" || d.Path == "golang.org/x/sys/unix"
			},
		},
	}
}

// DoublesTree is the one tree the doubles of external systems live in:
// the double of what the driver forge/X or vmm/X talks to is the package
// DoublesTree/Xdouble (githubdouble, gitlabdouble, firecrackerdouble),
// and a stand-in for one of that system's programs is its command
// DoublesTree/Xdouble/cmd/<the program's name> (gitlab-runner,
// actions-runner, firecracker).
const DoublesTree = "internal/double"

// TestHelpers are the module's test helper packages: test code, never
// part of the product. They are named here, not told by a name's ending:
// a product package named "latest" or "attest" must stay held to every
// rule. A new helper not listed is held to the rules too, and fails the
// one against importing testing until it is added.
var TestHelpers = []string{"internal/hosttest", "internal/deptest", "forge/forgetest", "fleet/fleettest"}

// TestCode reports whether the module's package rel is test code, never
// part of the product: the doubles' tree (DoublesTree) and everything
// below it; a listed test helper (TestHelpers); the end-to-end tests'
// tree (e2e). So that a double put anywhere else is still held to the
// rules, a path element ending in "double" or "doubles", or starting with
// "fake", is test code too (DoubleNaming reports such a package as
// misplaced).
func TestCode(rel string) bool {
	if under(rel, []string{DoublesTree}) || oneOf(rel, TestHelpers) {
		return true
	}
	for _, e := range strings.Split(rel, "/") {
		if e == "e2e" || strings.HasPrefix(e, "fake") {
			return true
		}
		for _, suffix := range []string{"double", "doubles"} {
			if strings.HasSuffix(e, suffix) {
				return true
			}
		}
	}
	return false
}

// DoubleNaming returns what breaks the doubles' naming rule among the
// module's packages rels: a package right below DoublesTree not named
// <system>double, and a package outside DoublesTree that looks like a
// double (a path element ending in "double" or "doubles", or starting
// with "fake").
func DoubleNaming(rels []string) []string {
	var out []string
	for _, rel := range rels {
		if under(rel, []string{DoublesTree}) {
			if rel == DoublesTree {
				out = append(out, rel+": the doubles' tree holds packages, not code of its own")
				continue
			}
			top := strings.SplitN(strings.TrimPrefix(rel, DoublesTree+"/"), "/", 2)[0]
			if !strings.HasSuffix(top, "double") || top == "double" {
				out = append(out, rel+": a double is named <system>double ("+DoublesTree+"/githubdouble)")
			}
			continue
		}
		for _, e := range strings.Split(rel, "/") {
			if strings.HasSuffix(e, "double") || strings.HasSuffix(e, "doubles") || strings.HasPrefix(e, "fake") {
				out = append(out, rel+": a double lives in "+DoublesTree)
				break
			}
		}
	}
	sort.Strings(out)
	return out
}

// is binds exactly the packages named.
func is(rels ...string) func(string) bool {
	return func(rel string) bool { return oneOf(rel, rels) }
}

func oneOf(s string, set []string) bool {
	for _, x := range set {
		if s == x {
			return true
		}
	}
	return false
}

// under reports whether rel is one of roots or below one.
func under(rel string, roots []string) bool {
	for _, r := range roots {
		if rel == r || strings.HasPrefix(rel, r+"/") {
			return true
		}
	}
	return false
}
