//go:build e2e

package e2e

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/netplan"
)

const slowWorkflow = `on: [push]
jobs:
  slow:
    runs-on: fireactions-chaos
    steps:
      - run: |
          echo "fireactions-vm=$(hostname) start"
          sleep 25
          echo "fireactions-vm=$(hostname) done"
`

// TestCrashRecoveryAndDrain kills the orchestrator with SIGKILL while VMs
// are booting, idle and busy, starts it again, and checks the busy job
// still completes in its adopted VM; then SIGTERM with one busy and idle
// VMs: the idle ones go at once, the busy job completes, exit 0, and
// nothing is left anywhere.
func TestCrashRecoveryAndDrain(t *testing.T) {
	r := newGiteaRig(t, fmt.Sprintf("facha%d", os.Getpid()%100000))
	ns, bin, work, gitea, state, cfgPath := r.ns, r.bin, r.work, r.gitea, r.state, r.cfgPath
	cfg := r.oneVMConfig("chaos", work, "facha0", "10.203.0.0/24", "chaos", "fireactions-chaos", 2)
	cfg.Pools[0].Max = 3
	cfg.write(t, cfgPath)

	first := startOrchestrator(t, ns, bin, cfgPath, state)
	first.waitFor(t, 3*time.Minute, "2 idle VMs", func() bool { return countPhase(state, "idle") == 2 })

	gitea.api(http.MethodPost, "/api/v1/user/repos", map[string]any{"name": "slow", "default_branch": "main"}, nil)
	tree := filepath.Join(work, "repo")
	writeFile(t, filepath.Join(tree, ".gitea/workflows/slow.yml"), 0o644, slowWorkflow)
	gitea.push(tree, "ci/slow", "slow job")
	first.waitFor(t, 2*time.Minute, "a busy VM and a booting replacement", func() bool {
		return countPhase(state, "busy") == 1 && countPhase(state, "booting")+countPhase(state, "creating") >= 1
	})
	// The gateway's MAC is pinned: the replacement VM's TAP joining the
	// bridge, and being removed after the crash, must not change it under
	// the running guests.
	pinned := netplan.BridgeMAC("facha0").String()
	if got := linkMAC(t, ns, "facha0"); got != pinned {
		t.Fatalf("bridge mac %s with a booting replacement, want %s", got, pinned)
	}
	before := vmDirs(state)
	t.Logf("killing the orchestrator with SIGKILL; VMs: %v", before)
	if err := first.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-first.exited

	second := startOrchestrator(t, ns, bin, cfgPath, state)
	var busyID string
	for id, phase := range before {
		if phase == "busy" {
			busyID = id
		}
	}
	second.waitFor(t, 3*time.Minute, "the slow run to complete", func() bool {
		runs := gitea.runs("ci/slow")
		return len(runs) == 1 && runs[0].Status == "completed"
	})
	if got := linkMAC(t, ns, "facha0"); got != pinned {
		t.Fatalf("bridge mac %s after the restart, want %s", got, pinned)
	}
	runs := gitea.runs("ci/slow")
	if runs[0].Conclusion != "success" {
		t.Fatalf("the busy job across the crash ended %q", runs[0].Conclusion)
	}
	logs := gitea.raw(fmt.Sprintf("/api/v1/repos/ci/slow/actions/jobs/%d/logs", gitea.jobs("ci/slow")[0].ID))
	if !strings.Contains(logs, "fireactions-vm="+busyID+" done") {
		t.Fatalf("the job did not finish in the adopted VM %s:\n%s", busyID, logs)
	}
	// The rules after the restart admit exactly the live VMs: as a fresh
	// start would, with no element of a VM the crash left behind.
	second.waitFor(t, time.Minute, "rule elements equal to the live VMs", func() bool {
		out, err := exec.Command("ip", "netns", "exec", ns.name, "nft", "list", "set", "bridge", "fireactions_facha0", "allowed").CombinedOutput()
		if err != nil {
			return false
		}
		var inRules, live []string
		for _, m := range regexpMust(`"fa([0-9a-f]{12})"`).FindAllStringSubmatch(string(out), -1) {
			inRules = append(inRules, m[1])
		}
		for id, phase := range vmDirs(state) {
			if phase != "creating" {
				live = append(live, id)
			}
		}
		sort.Strings(inRules)
		sort.Strings(live)
		return strings.Join(inRules, ",") == strings.Join(live, ",")
	})
	adopted := logLines(second.log, regexpMust(`adopted vm`))
	if len(adopted) == 0 {
		t.Fatal("the restarted orchestrator adopted no VM")
	}
	t.Logf("adopted after the crash: %d VM(s)", len(adopted))

	// Drain with one busy and idle VMs.
	gitea.push(tree, "ci/slow", "slow job again")
	second.waitFor(t, 3*time.Minute, "one busy and two idle VMs", func() bool {
		return countPhase(state, "busy") == 1 && countPhase(state, "idle") == 2
	})
	second.terminate(t)
	waitFor(t, 15*time.Second, "the idle VMs to go at once", func() bool { return countPhase(state, "idle") == 0 })
	if countPhase(state, "busy") != 1 {
		t.Fatal("the busy VM did not survive the start of the drain")
	}
	second.waitExit(t, 3*time.Minute)
	runs = gitea.runs("ci/slow")
	for _, r := range runs {
		if r.Status != "completed" || r.Conclusion != "success" {
			t.Errorf("run %d: %s %s", r.ID, r.Status, r.Conclusion)
		}
	}
	assertNothingLeft(t, ns, gitea, state, "facha0")
}

func countPhase(state, phase string) int {
	n := 0
	for _, p := range vmDirs(state) {
		if p == phase {
			n++
		}
	}
	return n
}

// linkMAC is the MAC of a link in the test's namespace.
func linkMAC(t *testing.T, ns *testNetns, name string) string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", ns.name, "cat", "/sys/class/net/"+name+"/address").CombinedOutput()
	if err != nil {
		t.Fatalf("mac of %s: %v: %s", name, err, out)
	}
	return strings.TrimSpace(string(out))
}
