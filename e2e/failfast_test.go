//go:build e2e

package e2e

import (
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// forkBombWorkflow's job breaks its runner: it kills it, as the runner's
// own user may. (A fork bomb no longer does: the job's budget keeps it
// from the runner, see TestJobBudgetKeepsTheRunnerAlive.)
const forkBombWorkflow = `on: [push]
jobs:
  bomb:
    runs-on: fireactions-fail
    steps:
      - run: |
          echo "fireactions-vm=$(hostname) user=$(id -un)"
          for p in /proc/[0-9]*; do
            if [ "$(cat $p/comm 2>/dev/null)" = act_runner ]; then kill -9 "${p#/proc/}"; fi
          done
          sleep 600
`

const afterBombWorkflow = `on: [workflow_dispatch]
jobs:
  after:
    runs-on: fireactions-fail
    steps:
      - run: echo "fireactions-vm=$(hostname) after the bomb"
`

// TestForkBombFailsItsJobAtOnce: a job that breaks its runner is failed at
// the forge as soon as the runner is gone (not when Gitea's own clean-up
// gets to it minutes later), with the reason in the job's log, the VM's
// console is kept, and the next job runs.
func TestForkBombFailsItsJobAtOnce(t *testing.T) {
	r := newGiteaRig(t, "fa-fail")
	gitea, state, work, ns := r.gitea, r.state, r.work, r.ns
	orch := r.startSmallPool("failfast", "fafail0", "10.226.0.0/24", "fail", "fireactions-fail")

	gitea.api(http.MethodPost, "/api/v1/user/repos", map[string]any{"name": "bomb", "default_branch": "main"}, nil)
	tree := filepath.Join(work, "repo")
	writeFile(t, filepath.Join(tree, ".gitea/workflows/bomb.yml"), 0o644, forkBombWorkflow)
	writeFile(t, filepath.Join(tree, ".gitea/workflows/after.yml"), 0o644, afterBombWorkflow)
	gitea.push(tree, "ci/bomb", "bomb")

	// The runner dies when the job kills it; the agent then reports its
	// exit and powers the VM off.
	bombVM := orch.waitVM(t, 5*time.Minute, "the bomb's job to start", "busy")
	// The host knows the runner is gone when the agent reports its exit,
	// or else when the VM ends: whichever comes first.
	var died time.Time
	var how string
	exited := regexp.MustCompile(`vm=` + bombVM + ` event=runner-exited`)
	orch.waitFor(t, 15*time.Minute, "the bomb's runner to die", func() bool {
		if len(logLines(orch.log, exited)) > 0 {
			died, how = time.Now(), "runner exit reported"
			return true
		}
		for _, cmdline := range qemuUnder(state) {
			if strings.Contains(cmdline, bombVM) {
				return false
			}
		}
		died, how = time.Now(), "VM ended"
		return true
	})
	bomb, failedLine := orch.waitJobFailedAtGitea(t, gitea, "ci/bomb", died, "bomb's runner dead ("+how+")",
		"fireactions: the runner died before its job ended", "fail", bombVM)
	// The console is kept as the VM's teardown ends, after the job failed.
	kept := filepath.Join(state, "logs", bombVM+".log")
	orch.waitFor(t, time.Minute, "the bomb VM's console log kept", func() bool {
		_, err := os.Stat(kept)
		return err == nil
	})
	for _, l := range logLines(kept, regexp.MustCompile(`event runner-exited|budget:|leftover|powering off`)) {
		t.Logf("FIGURE guest console of the bomb's VM: %s", l)
	}

	// The next job runs, in a fresh VM.
	gitea.api(http.MethodPost, "/api/v1/repos/ci/bomb/actions/workflows/after.yml/dispatches", map[string]any{"ref": "main"}, nil)
	orch.waitJobsDone(t, 6*time.Minute, "the next job to complete", gitea, "ci/bomb", 2)
	for _, j := range gitea.jobs("ci/bomb") {
		if j.ID != bomb.ID && j.Conclusion != "success" {
			t.Fatalf("the job after the bomb concluded %q", j.Conclusion)
		}
	}
	if lines := logLines(orch.log, failedLine); len(lines) != 1 {
		t.Errorf("the job was failed %d times: %q", len(lines), lines)
	}
	orch.terminate(t)
	orch.waitExit(t, 2*time.Minute)
	assertNothingLeft(t, ns, gitea, state, "fafail0")
	_ = os.Remove(r.cfgPath)
}
