// Package deptest holds the import rules that package docs promise (the
// guest agent imports only the standard library, x/sys/unix, netlink and
// agentproto; agentproto stays free of host-only imports; no product
// package imports a test double; only the wiring, the daemon, picks a VMM
// or forge driver; only cmd/ imports the command line; the driver
// catalog and the forges' shared HTTP connection (forge/forgehttp)
// depend on the standard library only; the Firecracker driver adds no
// dependency) and checks them
// against the import graph of the real build, as `go list -deps -json`
// reports it, the way tailscale's tstest/deptest does.
//
// It exists because a doc comment is enforced by nothing: an import that
// breaks a promise compiles, passes every other test and is noticed, if
// ever, by a reader. The rules live in Rules; the test of this package
// holds the module to them, and holds every rule to a fixture module
// (testdata/fixture) that breaks each on purpose. Its tests also hold the
// README's architecture table to the tree: every package named exists,
// every package is named. It is test code: no product package imports
// it.
package deptest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sort"
	"strings"
)

// Package is one package of a build's import graph.
type Package struct {
	ImportPath string
	Standard   bool     // in the standard library
	Imports    []string // direct imports
	Deps       []string // every package it depends on, directly or not
	Module     *struct {
		Path string
		Main bool
	}
}

// Graph is the import graph of a module's build: its packages and every
// package they depend on.
type Graph struct {
	Module   string // the main module's path
	Packages map[string]*Package
}

// Load runs `go list -deps -json ./...` in the module at dir, as the
// product is built (CGO_ENABLED=0, no build tags, no test files), and
// returns the graph.
func Load(dir string) (*Graph, error) {
	cmd := exec.Command("go", "list", "-deps", "-json", "./...")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=", "GOWORK=off")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go list in %s: %w: %s", dir, err, stderr.String())
	}
	g := &Graph{Packages: map[string]*Package{}}
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		p := new(Package)
		if err := dec.Decode(p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return nil, fmt.Errorf("go list in %s: %w", dir, err)
		}
		g.Packages[p.ImportPath] = p
		if p.Module != nil && p.Module.Main {
			g.Module = p.Module.Path
		}
	}
	if g.Module == "" {
		return nil, fmt.Errorf("go list in %s: no package of the main module", dir)
	}
	return g, nil
}

// Dep is a package as a rule sees it.
type Dep struct {
	Path     string // import path
	Rel      string // path inside the main module ("" if not in it)
	Standard bool   // in the standard library
}

// Rule is one import rule.
type Rule struct {
	// Name is the promise, and whose doc makes it.
	Name string
	// Binds tells whether the rule binds the main module's package rel
	// (its path inside the module).
	Binds func(rel string) bool
	// Allows tells whether a bound package may depend on dep, directly or
	// through other packages (only directly, when Direct).
	Allows func(dep Dep) bool
	// Direct holds a bound package to its own imports only: what they
	// bring in is theirs to answer for.
	Direct bool
}

// Violation is a bound package depending on what its rule forbids.
type Violation struct {
	Rule string
	Pkg  string   // the bound package, inside the module
	Dep  string   // what it must not depend on
	Via  []string // the import chain from Pkg to Dep
}

func (v Violation) String() string {
	return fmt.Sprintf("%s depends on %s (%s), which breaks: %s", v.Pkg, v.Dep, strings.Join(v.Via, " → "), v.Rule)
}

// Check returns every violation of rules in g, sorted.
func Check(g *Graph, rules []Rule) []Violation {
	var out []Violation
	for _, p := range g.Packages {
		rel, ok := g.rel(p.ImportPath)
		if !ok {
			continue
		}
		for _, r := range rules {
			if !r.Binds(rel) {
				continue
			}
			deps := p.Deps
			if r.Direct {
				deps = p.Imports
			}
			for _, d := range deps {
				dep := g.dep(d)
				if r.Allows(dep) {
					continue
				}
				name := d
				if dep.Rel != "" {
					name = dep.Rel
				}
				out = append(out, Violation{Rule: r.Name, Pkg: rel, Dep: name, Via: g.chain(p.ImportPath, d)})
			}
		}
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Rule != b.Rule {
			return a.Rule < b.Rule
		}
		if a.Pkg != b.Pkg {
			return a.Pkg < b.Pkg
		}
		return a.Dep < b.Dep
	})
	return out
}

// rel is path inside the main module.
func (g *Graph) rel(path string) (string, bool) {
	p := g.Packages[path]
	if p == nil || p.Module == nil || !p.Module.Main {
		return "", false
	}
	if path == g.Module {
		return ".", true
	}
	return strings.TrimPrefix(path, g.Module+"/"), true
}

func (g *Graph) dep(path string) Dep {
	d := Dep{Path: path}
	if p := g.Packages[path]; p != nil {
		d.Standard = p.Standard
	}
	d.Rel, _ = g.rel(path)
	return d
}

// chain is the shortest import chain from one package to another, each
// named inside the module where it is in it.
func (g *Graph) chain(from, to string) []string {
	prev := map[string]string{from: ""}
	queue := []string{from}
	for len(queue) > 0 && prev[to] == "" {
		cur := queue[0]
		queue = queue[1:]
		if p := g.Packages[cur]; p != nil {
			for _, next := range p.Imports {
				if _, seen := prev[next]; !seen {
					prev[next] = cur
					queue = append(queue, next)
				}
			}
		}
	}
	var path []string
	for cur := to; cur != ""; cur = prev[cur] {
		name := cur
		if rel, ok := g.rel(cur); ok {
			name = rel
		}
		path = append([]string{name}, path...)
		if cur == from {
			break
		}
	}
	return path
}
