//go:build e2e

package e2e

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// budgetBombWorkflow's job fork-bombs for 20 s (each bomb process stops
// forking then; timeout is the backstop), as its runner's user, then fails
// its step (if the job's OOM kill has not ended it already): the bomb runs
// into the job's budget, not the runner's limits.
const budgetBombWorkflow = `on: [push]
jobs:
  bomb:
    runs-on: fireactions-cg
    steps:
      - run: |
          echo "fireactions-vm=$(hostname) user=$(id -un) cgroup=$(cat /proc/self/cgroup)"
          timeout -s KILL 40 bash -c 'bomb() { [ $SECONDS -lt 20 ] || exit 0; bomb | bomb & }; bomb; sleep 30' >/dev/null 2>&1 || echo "the bomb ended: $?"
          exit 1
      - if: always()
        run: |
          cd /sys/fs/cgroup/job
          echo "job budget: pids.max=$(cat pids.max) pids.events=$(cat pids.events) memory.max=$(cat memory.max) memory.events=$(cat memory.events | tr '\n' ' ')"
`

const budgetAfterWorkflow = `on: [workflow_dispatch]
jobs:
  after:
    runs-on: fireactions-cg
    steps:
      - run: echo "fireactions-vm=$(hostname) after the bomb"
`

// TestJobBudgetKeepsTheRunnerAlive: a job that fork-bombs inside its guest
// exhausts its own budget (the job's cgroup), not its runner's: the
// runner lives on, reports the job failed through its normal path (the
// step's own output in the log, not the orchestrator's "runner died"),
// exits 0 so the VM ends cleanly, and the next job runs.
func TestJobBudgetKeepsTheRunnerAlive(t *testing.T) {
	r := newGiteaRig(t, "fa-cg")
	gitea, state, work, ns := r.gitea, r.state, r.work, r.ns
	orch := r.startSmallPool("cgroup", "facg0", "10.229.0.0/24", "cg", "fireactions-cg")

	gitea.api(http.MethodPost, "/api/v1/user/repos", map[string]any{"name": "cgbomb", "default_branch": "main"}, nil)
	tree := filepath.Join(work, "repo")
	writeFile(t, filepath.Join(tree, ".gitea/workflows/bomb.yml"), 0o644, budgetBombWorkflow)
	writeFile(t, filepath.Join(tree, ".gitea/workflows/after.yml"), 0o644, budgetAfterWorkflow)
	gitea.push(tree, "ci/cgbomb", "bomb")

	bombVM := orch.waitVM(t, 5*time.Minute, "the bomb's job to start", "busy")
	bomb := orch.waitJobsDone(t, 10*time.Minute, "the bomb's job to end at Gitea", gitea, "ci/cgbomb", 1)[0]
	if bomb.Conclusion != "failure" {
		t.Fatalf("the bomb's job concluded %q, want failure", bomb.Conclusion)
	}
	// The runner itself ended the job (the step ends when the bomb is
	// killed, or when the job's memory runs out and the OOM killer picks
	// the step's shell), and the orchestrator never had to fail it.
	logText := gitea.raw(fmt.Sprintf("/api/v1/repos/ci/cgbomb/actions/jobs/%d/logs", bomb.ID))
	if !strings.Contains(logText, "Job failed") || strings.Contains(logText, "the runner died") {
		t.Errorf("the job's log does not show the runner ending it:\n%s", tail([]byte(logText), 4<<10))
	}
	// The bomb ran in the job's cgroup, and hit its limits there.
	if !strings.Contains(logText, "cgroup=0::/job") {
		t.Errorf("the job's processes are not in the job's cgroup:\n%s", tail([]byte(logText), 4<<10))
	}
	budgetLine := regexp.MustCompile(`job budget: pids.max=\d+ pids.events=max (\d+) memory.max=\d+ memory.events=.*oom_kill (\d+)`)
	// The last step reads the job's cgroup, unless what is left of the
	// bomb (a group OOM kill can miss a process forking meanwhile) has it
	// OOM-killed too: then there is no figure, and the job failed anyway.
	if m := budgetLine.FindStringSubmatch(logText); m != nil {
		t.Logf("FIGURE %s", m[0])
		if m[1] == "0" && m[2] == "0" {
			t.Errorf("the bomb hit neither the job's process limit nor its memory limit: %s", m[0])
		}
	} else {
		t.Logf("FIGURE no budget line: the bomb's leftovers had the last step killed too")
	}
	// The runner exited 0: the VM ended as a VM whose job is done.
	gone := regexp.MustCompile(`msg="vm gone" pool=cg vm=` + bombVM + ` ok=(\S+)`)
	orch.waitFor(t, 2*time.Minute, "the bomb's VM to end", func() bool { return len(logLines(orch.log, gone)) > 0 })
	if l := logLines(orch.log, gone)[0]; !strings.Contains(l, "ok=true") {
		t.Errorf("the bomb's VM did not end cleanly: %s", l)
	}
	if lines := logLines(orch.log, regexp.MustCompile(`msg="job failed at the forge" pool=cg vm=`+bombVM)); len(lines) != 0 {
		t.Errorf("the orchestrator had to fail the job: %q", lines)
	}

	// The next job runs, in a fresh VM.
	gitea.api(http.MethodPost, "/api/v1/repos/ci/cgbomb/actions/workflows/after.yml/dispatches", map[string]any{"ref": "main"}, nil)
	orch.waitJobsDone(t, 6*time.Minute, "the next job to complete", gitea, "ci/cgbomb", 2)
	for _, j := range gitea.jobs("ci/cgbomb") {
		if j.ID != bomb.ID && j.Conclusion != "success" {
			t.Fatalf("the job after the bomb concluded %q", j.Conclusion)
		}
	}
	orch.terminate(t)
	orch.waitExit(t, 2*time.Minute)
	assertNothingLeft(t, ns, gitea, state, "facg0")
	_ = os.Remove(r.cfgPath)
}
