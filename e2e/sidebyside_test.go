//go:build e2e

package e2e

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

const sideBySideWorkflow = `on: [push]
jobs:
  long:
    runs-on: fireactions-sbs-b
    steps:
      - run: |
          echo "fireactions-vm=$(hostname) start"
          sleep 45
          echo "fireactions-vm=$(hostname) done"
`

// sideBySideConfig is one of the two orchestrators' configuration, its
// files under dir; its pool is named for hostID without dashes.
func sideBySideConfig(r *giteaRig, hostID, dir, bridge, cidr, label string, minIdle int) *orchConfig {
	return r.oneVMConfig(hostID, dir, bridge, cidr, strings.ReplaceAll(hostID, "-", ""), label, minIdle)
}

// giteaRunnerNames lists the names of every runner Gitea has.
func giteaRunnerNames(g *giteaServer) []string {
	var r struct {
		Runners []struct {
			Name string `json:"name"`
		} `json:"runners"`
	}
	g.api(http.MethodGet, "/api/v1/admin/actions/runners?limit=50", nil, &r)
	var out []string
	for _, x := range r.Runners {
		out = append(out, x.Name)
	}
	return out
}

// TestOrchestratorsSideBySideNeverTouchEachOthersRunners (issue 23): two
// orchestrators on one host serve one Gitea, with host ids "sbs" and
// "sbs-b" (every runner name of "sbs-b" starts with "fa-sbs-"). While
// sbs-b runs a long job, sbs is killed with SIGKILL and started again:
// its recovery removes what its own previous run left, and sbs-b's job
// completes in the VM that took it, with its runner and VM untouched.
func TestOrchestratorsSideBySideNeverTouchEachOthersRunners(t *testing.T) {
	r := newGiteaRig(t, "fa-sbs")
	gitea, work, ns, bin := r.gitea, r.work, r.ns, r.bin

	workA, workB := filepath.Join(work, "sbs"), filepath.Join(work, "sbs-b")
	for _, d := range []string{workA, workB} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	stateA, stateB := filepath.Join(workA, "state"), filepath.Join(workB, "state")
	cfgA, cfgB := filepath.Join(workA, "fireactions.yaml"), filepath.Join(workB, "fireactions.yaml")
	sideBySideConfig(r, "sbs", workA, "fasbs0", "10.221.0.0/24", "fireactions-sbs", 1).write(t, cfgA)
	sideBySideConfig(r, "sbs-b", workB, "fasbs1", "10.222.0.0/24", "fireactions-sbs-b", 1).write(t, cfgB)

	a := startOrchestrator(t, ns, bin, cfgA, stateA)
	b := startOrchestrator(t, ns, bin, cfgB, stateB)
	a.waitFor(t, 4*time.Minute, "an idle VM of sbs", func() bool { return countPhase(stateA, "idle") == 1 })
	b.waitFor(t, 4*time.Minute, "an idle VM of sbs-b", func() bool { return countPhase(stateB, "idle") == 1 })

	gitea.api(http.MethodPost, "/api/v1/user/repos", map[string]any{"name": "sbs", "default_branch": "main"}, nil)
	tree := filepath.Join(work, "repo")
	writeFile(t, filepath.Join(tree, ".gitea/workflows/long.yml"), 0o644, sideBySideWorkflow)
	gitea.push(tree, "ci/sbs", "a long job for sbs-b")
	b.waitFor(t, 2*time.Minute, "sbs-b's VM busy", func() bool { return countPhase(stateB, "busy") == 1 })
	var busyID string
	for id, phase := range vmDirs(stateB) {
		if phase == "busy" {
			busyID = id
		}
	}
	busyRunner := "fa-sbs-b-" + busyID
	qemuB := qemuUnder(stateB + "/")
	names := giteaRunnerNames(gitea)
	if !containsString(names, busyRunner) {
		t.Fatalf("sbs-b's busy runner %s not at Gitea: %v", busyRunner, names)
	}
	// Control: the old prefix of sbs starts the busy runner's name.
	if !strings.HasPrefix(busyRunner, "fa-sbs-") {
		t.Fatalf("control: %s does not start with fa-sbs-", busyRunner)
	}

	t.Logf("killing sbs with SIGKILL; sbs VMs %v, sbs-b VMs %v, runners %v", vmDirs(stateA), vmDirs(stateB), names)
	if err := a.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-a.exited
	a2 := startOrchestrator(t, ns, bin, cfgA, stateA)
	a2.waitFor(t, 2*time.Minute, "sbs serving again", func() bool {
		return len(logLines(a2.log, regexpMust(`msg=serving`))) > 0
	})
	// Recovery is over before "serving": it removed no runner of sbs-b.
	for _, l := range logLines(a2.log, regexpMust(`fa-sbs-b-`)) {
		t.Errorf("the restarted sbs touched a runner of sbs-b: %s", l)
	}
	if n := countPhase(stateB, "busy"); n != 1 || !containsString(giteaRunnerNames(gitea), busyRunner) {
		t.Fatalf("after sbs's restart: sbs-b has %d busy VM(s), Gitea runners %v; want its busy VM and runner %s",
			n, giteaRunnerNames(gitea), busyRunner)
	}

	b.waitFor(t, 4*time.Minute, "sbs-b's job to complete", func() bool {
		runs := gitea.runs("ci/sbs")
		return len(runs) == 1 && runs[0].Status == "completed"
	})
	if runs := gitea.runs("ci/sbs"); runs[0].Conclusion != "success" {
		t.Fatalf("sbs-b's job across sbs's restart ended %q", runs[0].Conclusion)
	}
	logs := gitea.raw(fmt.Sprintf("/api/v1/repos/ci/sbs/actions/jobs/%d/logs", gitea.jobs("ci/sbs")[0].ID))
	if !strings.Contains(logs, "fireactions-vm="+busyID+" done") {
		t.Fatalf("the job did not finish in sbs-b's VM %s:\n%s", busyID, logs)
	}
	// sbs-b's VM went its own way: it ended after its job, cleanly, by
	// its own orchestrator; nothing else ended it.
	b.waitFor(t, time.Minute, "sbs-b's VM gone after its job", func() bool {
		_, ok := vmDirs(stateB)[busyID]
		return !ok
	})
	gone := logLines(b.log, regexpMust(`msg="vm gone".*vm=`+busyID))
	if len(gone) != 1 || !strings.Contains(gone[0], "ok=true") {
		t.Fatalf("sbs-b's VM %s ended %v, want once with ok=true", busyID, gone)
	}
	if len(qemuB) != 1 {
		t.Errorf("sbs-b had %d QEMU process(es) while busy, want 1: %v", len(qemuB), qemuB)
	}
	for _, l := range logLines(a2.log, regexpMust(busyID)) {
		t.Errorf("sbs's log names sbs-b's VM: %s", l)
	}

	// Both drain; nothing of either is left.
	a2.terminate(t)
	b.terminate(t)
	a2.waitExit(t, 3*time.Minute)
	b.waitExit(t, 3*time.Minute)
	if names := giteaRunnerNames(gitea); len(names) != 0 {
		t.Errorf("runners left at Gitea: %v", names)
	}
	for _, s := range []string{stateA, stateB} {
		if ps := qemuProcessesUnder(s + "/"); len(ps) != 0 {
			t.Errorf("QEMU processes left: %v", ps)
		}
		if left := vmDirs(s); len(left) != 0 {
			t.Errorf("VM directories left under %s: %v", s, left)
		}
	}
	for _, l := range ns.links(t) {
		if strings.HasPrefix(l, "fa") && l != "fasbs0" && l != "fasbs1" {
			t.Errorf("TAP left: %s", l)
		}
	}
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
