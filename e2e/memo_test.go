//go:build e2e

package e2e

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/vmstate"
)

// waitThenBreakWorkflow's job waits until the test pushes a file named
// "go" to another repository, ci/signal (after it restarted the
// orchestrator), then kills its runner.
const waitThenBreakWorkflow = `on: [push]
jobs:
  wait:
    runs-on: fireactions-memo
    steps:
      - run: |
          echo "fireactions-vm=$(hostname) user=$(id -un)"
          until wget -q -O /dev/null http://10.233.0.1:3000/ci/signal/raw/branch/main/go; do sleep 1; done
          for p in /proc/[0-9]*; do
            if [ "$(cat $p/comm 2>/dev/null)" = act_runner ]; then kill -9 "${p#/proc/}"; fi
          done
          sleep 600
`

// TestJobOfAVMAdoptedAfterARestartFailsAtGiteaAtOnce (issue 24): the
// orchestrator is killed while a VM runs its job and started again,
// adopting the VM; the job then kills its runner. The job is failed at
// Gitea within seconds, with the reason in its log, by the restarted
// orchestrator, with the runner's own credential it read from the VM's
// record (0600, in a 0700 directory), which no log line of either run
// holds.
func TestJobOfAVMAdoptedAfterARestartFailsAtGiteaAtOnce(t *testing.T) {
	r := newGiteaRig(t, "memo")
	gitea, state, work, ns := r.gitea, r.state, r.work, r.ns
	first := r.startSmallPool("memo", "famem0", "10.233.0.0/24", "memo", "fireactions-memo")

	gitea.api(http.MethodPost, "/api/v1/user/repos", map[string]any{"name": "memo", "default_branch": "main"}, nil)
	tree := filepath.Join(work, "repo")
	writeFile(t, filepath.Join(tree, ".gitea/workflows/wait.yml"), 0o644, waitThenBreakWorkflow)
	gitea.api(http.MethodPost, "/api/v1/user/repos", map[string]any{"name": "signal", "default_branch": "main"}, nil)
	gitea.push(tree, "ci/memo", "wait")
	vm := first.waitVM(t, 5*time.Minute, "the job to start", "busy")

	// The record holds the runner's own credential, and only its owner
	// may read it.
	vmsDir := filepath.Join(state, "vms")
	recs, err := vmstate.ReadRecords(vmsDir)
	if err != nil {
		t.Fatal(err)
	}
	var rec vmstate.Record
	for _, r := range recs {
		if r.ID == vm {
			rec = *r
		}
	}
	logs, _ := filepath.Glob(filepath.Join(vmsDir, "records.*"))
	var b []byte
	for _, l := range logs {
		content, err := os.ReadFile(l)
		if err != nil {
			t.Fatal(err)
		}
		b = append(b, content...)
	}
	var memo struct{ UUID, Token string }
	if err := json.Unmarshal([]byte(rec.RunnerMemo), &memo); err != nil || memo.Token == "" || memo.UUID == "" {
		t.Fatalf("the busy record's runner memo %q holds no runner credential (%v)", rec.RunnerMemo, err)
	}
	if strings.Contains(string(b), gitea.token) {
		t.Fatal("the VM's record holds the scope-wide API token")
	}
	if !strings.Contains(string(b), memo.Token) {
		t.Fatal("control: the store's files do not hold the runner's credential; their modes prove nothing")
	}
	modes := map[string]os.FileMode{filepath.Join(vmsDir, vm): 0o700 | os.ModeDir, vmsDir: 0o700 | os.ModeDir}
	for _, l := range logs {
		modes[l] = 0o600
	}
	for path, want := range modes {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if st := fi.Sys().(*syscall.Stat_t); fi.Mode() != want || st.Uid != 0 {
			t.Errorf("%s: mode %v uid %d, want %v root's", path, fi.Mode(), st.Uid, want)
		}
		t.Logf("FIGURE %s: mode %v uid %d", path, fi.Mode(), fi.Sys().(*syscall.Stat_t).Uid)
	}

	t.Logf("killing the orchestrator with SIGKILL while vm %s runs its job", vm)
	if err := first.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-first.exited
	firstLog, err := os.ReadFile(first.log) // the next run's log replaces it
	if err != nil {
		t.Fatal(err)
	}
	second := startOrchestrator(t, ns, r.bin, r.cfgPath, state)
	second.waitFor(t, 2*time.Minute, "the busy VM adopted", func() bool {
		return len(logLines(second.log, regexp.MustCompile(`adopted vm.*vm=`+vm+`|vm=`+vm+`.*adopted vm`))) > 0
	})

	// Now the job kills its runner.
	signal := filepath.Join(work, "signal")
	writeFile(t, filepath.Join(signal, "go"), 0o644, "go\n")
	gitea.push(signal, "ci/signal", "go")
	var died time.Time
	exited := regexp.MustCompile(`vm=` + vm + ` event=runner-exited`)
	second.waitFor(t, 5*time.Minute, "the adopted VM's runner to die", func() bool {
		if len(logLines(second.log, exited)) > 0 {
			died = time.Now()
			return true
		}
		return false
	})
	second.waitJobFailedAtGitea(t, gitea, "ci/memo", died, "adopted VM's runner dead",
		"fireactions: the runner died before its job ended: runner exit code", "memo", vm)
	if l := logLines(second.log, regexp.MustCompile(`job not failed at the forge`)); len(l) > 0 {
		t.Errorf("the restarted orchestrator could not fail the job: %q", l)
	}
	second.terminate(t)
	second.waitExit(t, 2*time.Minute)

	// The runner's credential reached no log line of either run; the
	// scan sees it where it is (the record's bytes).
	secondLog, err := os.ReadFile(second.log)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), memo.Token) {
		t.Fatal("control: the scan does not see the token in the record")
	}
	for name, l := range map[string][]byte{"first": firstLog, "second": secondLog} {
		if strings.Contains(string(l), memo.Token) {
			t.Errorf("the %s run's log holds the runner's token", name)
		}
	}
	assertNothingLeft(t, ns, gitea, state, "famem0")
	_ = os.Remove(r.cfgPath)
}
