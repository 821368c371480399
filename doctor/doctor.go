// Package doctor is the host preflight behind `fireactions doctor`: can
// this machine run the configured pools? It checks what a VM needs from
// the host (a KVM that really runs guests, the VMM binaries, a kernel in
// the format the VMM boots with the drivers its guests use, built in or
// loaded through the pool's kernel_modules (see package kconfig), the
// network tools, cgroups for the jailer, a
// writable state directory, disk and memory for every pool at its max)
// and says, for each problem, what to do. Every check goes through Host,
// so the unhealthy cases are tested with fakes.
package doctor

import (
	"fmt"
	"io"
	"sort"
	"strings"
)

// Status is a finding's verdict.
type Status int

const (
	OK Status = iota
	// Warn is a problem the pools run with (slower, or wasteful).
	Warn
	// Fail is a problem some pools cannot run with.
	Fail
)

func (s Status) String() string {
	switch s {
	case Warn:
		return "WARN"
	case Fail:
		return "FAIL"
	}
	return "ok"
}

// Finding is one check's result.
type Finding struct {
	Check  string // what was checked: kvm, firecracker, kernel, ...
	Status Status
	Detail string   // what was found
	Fix    string   // what to do, for Warn and Fail
	Pools  []string // for Fail: the pools that cannot run; empty means all
}

// Report is every finding, in check order.
type Report struct {
	Driver   string
	Pools    []string
	Findings []Finding
}

func (r *Report) add(f Finding) { r.Findings = append(r.Findings, f) }

// Blocked are the pools that cannot run, sorted.
func (r Report) Blocked() []string {
	set := map[string]bool{}
	for _, f := range r.Findings {
		if f.Status != Fail {
			continue
		}
		ps := f.Pools
		if len(ps) == 0 {
			ps = r.Pools
		}
		for _, p := range ps {
			set[p] = true
		}
	}
	out := make([]string, 0, len(set))
	for p := range set {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

// Failed reports whether any check failed: then `fireactions doctor`
// exits non-zero.
func (r Report) Failed() bool {
	for _, f := range r.Findings {
		if f.Status == Fail {
			return true
		}
	}
	return false
}

// Write prints the report, one line per finding (and one per fix).
func (r Report) Write(w io.Writer) {
	fmt.Fprintf(w, "vmm.driver %s; pools: %s\n", r.Driver, listOrNone(r.Pools))
	for _, f := range r.Findings {
		fmt.Fprintf(w, "%-4s  %-12s %s\n", f.Status, f.Check, f.Detail)
		if f.Fix != "" && f.Status != OK {
			fmt.Fprintf(w, "%-4s  %-12s → %s\n", "", "", f.Fix)
		}
	}
	warns, fails := 0, 0
	for _, f := range r.Findings {
		switch f.Status {
		case Warn:
			warns++
		case Fail:
			fails++
		}
	}
	switch {
	case fails > 0:
		fmt.Fprintf(w, "result: %s failed, %s; pools that cannot run: %s\n", count(fails, "check"), count(warns, "warning"), listOrNone(r.Blocked()))
	case warns > 0:
		fmt.Fprintf(w, "result: every pool can run, with %s\n", count(warns, "warning"))
	default:
		fmt.Fprintln(w, "result: every pool can run")
	}
}

func listOrNone(l []string) string {
	if len(l) == 0 {
		return "none"
	}
	return strings.Join(l, ", ")
}

// count is "1 warning", "2 warnings".
func count(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

// mib formats bytes in MiB.
func mib(b uint64) string { return fmt.Sprintf("%d MiB", b>>20) }
