//go:build e2e

package e2e

import (
	"fmt"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

const warmWorkflow = `on: [push]
jobs:
  one:
    runs-on: fireactions-wpwarm
    steps:
      - run: echo "fireactions-vm=$(hostname) one boot=$(cat /proc/sys/kernel/random/boot_id) mac=$(cat /sys/class/net/eth0/address) rand=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
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
func TestGiteaJobsRunInRestoredVMs(t *testing.T) {
	r := newGiteaRig(t, "wpwarm")
	gitea, work := r.gitea, r.work
	cfg := r.config("wpwarm", work, "fawp0", "10.170.0.0/24")
	warm := r.jobPool("warm", "fireactions-wpwarm", 0, 2)
	warm.WarmStart = true
	cfg.Pools = []poolConfig{warm, r.jobPool("cold", "fireactions-wpcold", 0, 1)}
	o := r.start(cfg)
	o.waitFor(t, 4*time.Minute, "the warm pool's template built", func() bool {
		return len(logLines(o.log, regexp.MustCompile(`warm start: template built`))) == 1
	})

	gitea.api(http.MethodPost, "/api/v1/user/repos", map[string]any{"name": "warm", "default_branch": "main"}, nil)
	tree := filepath.Join(work, "repo")
	writeFile(t, filepath.Join(tree, ".gitea/workflows/warm.yml"), 0o644, warmWorkflow)
	gitea.push(tree, "ci/warm", "two jobs in restored VMs, one in a booted one")
	jobs := o.waitJobsDone(t, 6*time.Minute, "the three jobs done", gitea, "ci/warm", 3)

	vms := map[string]string{}    // job name → the VM it ran in
	seen := map[string][]string{} // restored job → its boot id, MAC, random bytes
	vmLine := regexp.MustCompile(`fireactions-vm=([0-9a-f]{12}) (one|two|cold)(?: boot=(\S+) mac=(\S+) rand=([0-9a-f]{32}))?`)
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
