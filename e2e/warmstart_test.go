//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// warmWorkflow's job one also probes, from a restored VM, two ports of
// the host on the pool's gateway: Gitea's (GW:FORGEPORT, which the pool's
// rules admit) and HOSTPORT (a listener the rules do not admit). It
// connects with busybox's nc -w: Debian 12's static busybox wget
// segfaults when given a timeout (-T), on the host too, and a probe of a
// port whose packets are dropped needs one.
const warmWorkflow = `on: [push]
jobs:
  one:
    runs-on: fireactions-wpwarm
    steps:
      - run: echo "fireactions-vm=$(hostname) one boot=$(cat /proc/sys/kernel/random/boot_id) mac=$(cat /sys/class/net/eth0/address) rand=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
      - run: |
          for p in forge=GW:FORGEPORT host=GW:HOSTPORT; do
            a=${p#*=}
            if nc -w 5 "${a%:*}" "${a#*:}" </dev/null; then r=reached; else r=blocked; fi
            echo "fireactions-probe ${p%%=*} $r"
          done
  two:
    runs-on: fireactions-wpwarm
    steps:
      - run: echo "fireactions-vm=$(hostname) two boot=$(cat /proc/sys/kernel/random/boot_id) mac=$(cat /sys/class/net/eth0/address) rand=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  cold:
    runs-on: fireactions-wpcold
    steps:
      - run: echo "fireactions-vm=$(hostname) cold"
`

// TestGiteaJobsRunInRestoredVMs: a warm-start pool builds its template
// (the real agent, booted with a template's config, saved while it
// waits for its identity), then its two jobs each run in a VM of their
// own restored from it (the orchestrator's log says so for both VMs,
// and neither booted cold), both succeeding at Gitea; a cold pool's job
// runs beside them in a booted VM: the FIGURE lines are start → runner
// ready for both kinds in the same run, and each runner's registration.
// Job one's VM, restored from the pool-built template, reaches the host
// port the pool's rules admit and not a listening one they do not (the
// isolation probes of TestGuestIsolationOfRestoredVMs, through the pool):
// that listener takes none of the guests' connections and the host's own
// (its positive control); both checks fail when the rules admit the port.
func TestGiteaJobsRunInRestoredVMs(t *testing.T) {
	r := newGiteaRig(t, "wpwarm")
	gitea, work := r.gitea, r.work
	cfg := r.config("wpwarm", work, "fawp0", "10.170.0.0/24")
	warm := r.jobPool("warm", "fireactions-wpwarm", 0, 2)
	warm.WarmStart = true
	cfg.Pools = []poolConfig{warm, r.jobPool("cold", "fireactions-wpcold", 0, 1)}
	gw := gateway(t, cfg.Network.CIDR)
	closed := listenCounting(t, r.ns)
	o := r.start(cfg)
	o.waitFor(t, 4*time.Minute, "the warm pool's template built", func() bool {
		return len(logLines(o.log, regexp.MustCompile(`warm start: template built`))) == 1
	})

	gitea.api(http.MethodPost, "/api/v1/user/repos", map[string]any{"name": "warm", "default_branch": "main"}, nil)
	tree := filepath.Join(work, "repo")
	writeFile(t, filepath.Join(tree, ".gitea/workflows/warm.yml"), 0o644,
		strings.NewReplacer("GW", gw, "FORGEPORT", giteaPort, "HOSTPORT", closed.port).Replace(warmWorkflow))
	gitea.push(tree, "ci/warm", "two jobs in restored VMs, one in a booted one")
	jobs := o.waitJobsDone(t, 6*time.Minute, "the three jobs done", gitea, "ci/warm", 3)

	vms := map[string]string{}    // job name → the VM it ran in
	seen := map[string][]string{} // restored job → its boot id, MAC, random bytes
	probes := map[string]string{}
	vmLine := regexp.MustCompile(`fireactions-vm=([0-9a-f]{12}) (one|two|cold)(?: boot=(\S+) mac=(\S+) rand=([0-9a-f]{32}))?`)
	probeLine := regexp.MustCompile(`fireactions-probe (forge|host) (reached|blocked)`)
	for _, j := range jobs {
		if j.Conclusion != "success" {
			t.Errorf("job %d ended %q", j.ID, j.Conclusion)
		}
		logs := gitea.raw(fmt.Sprintf("/api/v1/repos/ci/warm/actions/jobs/%d/logs", j.ID))
		if m := vmLine.FindStringSubmatch(logs); m != nil {
			vms[m[2]] = m[1]
			if m[2] != "cold" {
				seen[m[2]] = m[3:6]
			}
		}
		for _, m := range probeLine.FindAllStringSubmatch(logs, -1) {
			probes[m[1]] = m[2]
		}
	}
	// What the pool's rules let a restored VM reach on its host is what
	// they let a booted one reach: the port they admit, not another. The
	// listener counted no connection; the host's own, made next, it
	// does count (the probe would have seen one that got through).
	if probes["forge"] != "reached" || probes["host"] != "blocked" {
		t.Errorf("the restored VM's probes of its gateway: %v; want forge reached, host blocked", probes)
	}
	if n := closed.control(t, r.ns, gw); n != 0 {
		t.Errorf("the listener the rules do not admit took %d connections from the guests", n)
	}
	if len(vms) != 3 || vms["one"] == vms["two"] {
		t.Fatalf("jobs ran in VMs %v; want three, each its own", vms)
	}
	assertRestoredApart(t, o.log, "warm", vms, seen)
	took := regexp.MustCompile(`vm ready.*pool=(\S+).*vm=(\S+).*took=(\S+) restored=(\S+)`)
	for _, l := range logLines(o.log, took) {
		m := took.FindStringSubmatch(l)
		t.Logf("FIGURE start → runner ready, pool %s (restored %s): %s (vm %s)", m[1], m[4], m[3], m[2])
	}
	// A restore's QEMU starts before its runner's registration, which it
	// overlaps; its start → runner ready counts from the registration's end.
	reg := regexp.MustCompile(`runner registered.*pool=(\S+).*vm=(\S+).*took=(\S+)`)
	for _, l := range logLines(o.log, reg) {
		m := reg.FindStringSubmatch(l)
		t.Logf("FIGURE runner registered at Gitea, pool %s: %s (vm %s)", m[1], m[3], m[2])
	}
	o.terminate(t)
	o.waitExit(t, 2*time.Minute)
	assertNothingLeft(t, r.ns, gitea, r.state, "fawp0")
}

// assertRestoredApart: jobs one and two of a warm pool (kind names it in
// errors) ran in VMs restored from its template — the orchestrator's log
// (at log) says so for each VM (vms: job → VM), and says of none that it
// booted cold — and nothing of the template is shared between them: the
// boot ids, MACs and random bytes they read (seen: job → those three)
// differ.
func assertRestoredApart(t *testing.T, log, kind string, vms map[string]string, seen map[string][]string) {
	t.Helper()
	for i, what := range []string{"boot id", "MAC", "random bytes"} {
		a, b := seen["one"], seen["two"]
		if len(a) != 3 || len(b) != 3 || a[i] == "" || a[i] == b[i] {
			t.Errorf("the restored VMs' %s: %v and %v; want each its own", what, a, b)
		}
	}
	t.Logf("restored %s VMs read: one %v, two %v", kind, seen["one"], seen["two"])
	for _, name := range []string{"one", "two"} {
		if len(logLines(log, regexp.MustCompile(`vm restored from its pool's template.*vm=`+vms[name]))) != 1 {
			t.Errorf("job %s's VM %s was not restored from the template", name, vms[name])
		}
	}
	if cold := logLines(log, regexp.MustCompile(`warm start: booting cold`)); len(cold) != 0 {
		t.Errorf("the %s pool booted cold: %s", kind, strings.Join(cold, "\n"))
	}
}

// countingListener is a TCP listener of the host, on every address of
// its namespace, that the pools' rules do not admit: it counts the
// connections it takes.
type countingListener struct {
	port  string
	taken atomic.Int32
}

// listenCounting opens a countingListener in ns until the test ends.
func listenCounting(t *testing.T, ns *testNetns) *countingListener {
	t.Helper()
	ln, err := ns.listen("tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	l := &countingListener{port: port}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			l.taken.Add(1)
			c.Close()
		}
	}()
	return l
}

// control returns the connections taken so far, then connects to the
// listener on gw from the host and waits until it is counted: the
// positive control (the listener listens on the guests' gateway).
func (l *countingListener) control(t *testing.T, ns *testNetns, gw string) int32 {
	t.Helper()
	before := l.taken.Load()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := ns.dial(ctx, "tcp", net.JoinHostPort(gw, l.port))
	if err != nil {
		t.Fatalf("the positive control: the host connecting to its own listener on %s: %v", gw, err)
	}
	c.Close()
	for l.taken.Load() == before {
		if ctx.Err() != nil {
			t.Fatalf("the positive control: the listener did not count the host's connection")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return before
}
