//go:build e2e

package e2e

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const helloWorkflow = `on: [push, workflow_dispatch]
jobs:
  hello:
    runs-on: fireactions-e2e
    steps:
      - run: echo "fireactions-vm=$(hostname) user=$(id -un) kernel=$(uname -r)"
`

const failWorkflow = `on: [workflow_dispatch]
jobs:
  fail:
    runs-on: fireactions-e2e
    steps:
      - run: |
          echo "fireactions-vm=$(hostname) user=$(id -un)"
          exit 3
`

// TestGiteaJobsRunInTheirOwnMicroVMs is the core loop, for real: Gitea
// queues jobs, the orchestrator boots a microVM per job with a runner
// registered for it, each VM runs exactly one job and is destroyed, and a
// drain leaves no runner, process, TAP or file behind.
func TestGiteaJobsRunInTheirOwnMicroVMs(t *testing.T) {
	rig := newGiteaRig(t, fmt.Sprintf("fae2e%d", os.Getpid()%100000))
	ns, bin, work, gitea, state, cfgPath := rig.ns, rig.bin, rig.work, rig.gitea, rig.state, rig.cfgPath
	sock := filepath.Join(work, "api.sock")
	qemuBin, booted := capturingQEMU(t)
	cfg := rig.config("e2e", work, "fae2e0", "10.201.0.0/24")
	cfg.VMM = &vmmConfig{QEMU: &qemuConfig{Binary: qemuBin}}
	cfg.DrainGrace = "3m"
	cfg.Metrics = &metricsConfig{Listen: "127.0.0.1:9464"}
	cfg.Pools = []poolConfig{rig.jobPool("e2e", "fireactions-e2e", 1, 2)}
	cfg.write(t, cfgPath)

	orch := startOrchestrator(t, ns, bin, cfgPath, state)
	orch.waitFor(t, 3*time.Minute, "the min_idle VM to be idle", func() bool {
		for _, phase := range vmDirs(state) {
			if phase == "idle" {
				return true
			}
		}
		return false
	})

	t.Run("scope-wide secrets reach no guest-visible place", func(t *testing.T) {
		regToken := gitea.registrationToken()
		if regToken == "" {
			t.Fatal("no registration token")
		}
		secrets := map[string]string{"registration token": regToken, "API token": gitea.token}
		// Positive control: each secret planted in a runner file, encoded
		// as runner files travel (base64 in the agent's JSON config), is
		// found by the same scan.
		for what, s := range secrets {
			planted := guestVisible(t, plantedInitramfs(t, t.TempDir(), s))
			if !strings.Contains(string(planted), s) {
				t.Fatalf("positive control: the %s planted in a runner file is not found: the scan is blind to how runner files travel", what)
			}
		}
		for id := range vmDirs(state) {
			visible := guestVisible(t, capturedInitramfs(booted, id))
			// Positive controls: the search sees the VM's config (raw
			// archive) and the agent's archive (a gzip member).
			if !strings.Contains(string(visible), `"vm_id": "`+id+`"`) && !strings.Contains(string(visible), `"vm_id":"`+id+`"`) {
				t.Fatalf("vm %s: its own config is not visible in its initramfs: the search is broken", id)
			}
			if !strings.Contains(string(visible), "etc/fireactions/modules/") {
				t.Fatalf("vm %s: the agent archive was not decompressed: the search is broken", id)
			}
			for what, s := range secrets {
				if strings.Contains(string(visible), s) {
					t.Errorf("vm %s: the %s is in its initramfs", id, what)
				}
			}
			for _, p := range qemuProcessesUnder(state + "/") {
				for what, s := range secrets {
					if strings.Contains(p, s) {
						t.Errorf("the %s is on a QEMU command line (kernel command line): %s", what, p)
					}
				}
			}
		}
	})

	gitea.api(http.MethodPost, "/api/v1/user/repos", map[string]any{"name": "x", "default_branch": "main"}, nil)
	tree := filepath.Join(work, "repo")
	writeFile(t, filepath.Join(tree, ".gitea/workflows/hello.yml"), 0o644, helloWorkflow)
	writeFile(t, filepath.Join(tree, ".gitea/workflows/fail.yml"), 0o644, failWorkflow)

	// Run 1: a push, timed from push to the job's start.
	pushed := time.Now()
	gitea.push(tree, "ci/x", "first")
	var pushToStart time.Duration
	orch.waitFor(t, 3*time.Minute, "the first job to start", func() bool {
		for _, j := range gitea.jobs("ci/x") {
			if j.Status != "queued" && j.Status != "waiting" {
				pushToStart = time.Since(pushed)
				return true
			}
		}
		return false
	})

	// Runs 2 and 3 at the same moment, then run 4 by a push, then the
	// failing run.
	var wg sync.WaitGroup
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			gitea.api(http.MethodPost, "/api/v1/repos/ci/x/actions/workflows/hello.yml/dispatches", map[string]any{"ref": "main"}, nil)
		}()
	}
	wg.Wait()
	gitea.push(tree, "ci/x", "second")
	gitea.api(http.MethodPost, "/api/v1/repos/ci/x/actions/workflows/fail.yml/dispatches", map[string]any{"ref": "main"}, nil)

	orch.waitFor(t, 10*time.Minute, "5 runs to complete", func() bool {
		runs := gitea.runs("ci/x")
		done := 0
		for _, r := range runs {
			if r.Status == "completed" {
				done++
			}
		}
		return len(runs) == 5 && done == 5
	})

	vmOf := regexp.MustCompile(`fireactions-vm=([0-9a-f]+) user=(\S+)`)
	seen := map[string]int64{}
	var success, failure int
	var failedVM string
	for _, j := range gitea.jobs("ci/x") {
		logText := gitea.raw(fmt.Sprintf("/api/v1/repos/ci/x/actions/jobs/%d/logs", j.ID))
		m := vmOf.FindStringSubmatch(logText)
		if m == nil {
			t.Fatalf("job %d (%s) log has no VM id:\n%s", j.ID, j.Conclusion, logText)
		}
		if prev, dup := seen[m[1]]; dup {
			t.Errorf("jobs %d and %d both ran in VM %s", prev, j.ID, m[1])
		}
		seen[m[1]] = j.ID
		if m[2] == "root" {
			t.Errorf("job %d ran as root; runners must be unprivileged", j.ID)
		}
		switch j.Conclusion {
		case "success":
			success++
		case "failure":
			failure++
			failedVM = m[1]
		default:
			t.Errorf("job %d concluded %q", j.ID, j.Conclusion)
		}
	}
	if success != 4 || failure != 1 {
		t.Fatalf("conclusions: %d success, %d failure; want 4 and 1", success, failure)
	}
	if len(seen) != 5 {
		t.Fatalf("5 jobs ran in %d distinct VMs", len(seen))
	}
	waitFor(t, time.Minute, "the failed job's VM to be destroyed", func() bool {
		_, ok := vmDirs(state)[failedVM]
		return !ok
	})

	orch.waitFor(t, time.Minute, "every job's VM to be gone", func() bool { return countPhase(state, "busy") == 0 })
	t.Run("metrics after the runs", func(t *testing.T) {
		checkMetrics(t, ns.httpClient(), "http://127.0.0.1:9464/metrics", "e2e", 5, 1)
	})
	t.Run("operator CLI over the API socket", func(t *testing.T) {
		out := run(t, filepath.Join(bin, "fireactions"), "ps", "--socket", sock)
		if !strings.Contains(out, "ID") || !strings.Contains(out, "e2e") {
			t.Fatalf("fireactions ps:\n%s", out)
		}
		out = run(t, filepath.Join(bin, "fireactions"), "pools", "ls", "--socket", sock, "-o", "json")
		if !strings.Contains(out, `"min_idle": 1`) {
			t.Fatalf("fireactions pools ls -o json:\n%s", out)
		}
	})

	t.Run("SIGHUP reload scales the pool without touching its VMs", func(t *testing.T) {
		before := vmDirs(state)
		cfg.Pools[0].MinIdle = 2
		cfg.write(t, cfgPath)
		if err := orch.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		orch.waitFor(t, 3*time.Minute, "2 idle VMs after the reload", func() bool { return countPhase(state, "idle") == 2 })
		for id := range before {
			if _, ok := vmDirs(state)[id]; !ok {
				t.Errorf("vm %s ended by a reload that only scaled", id)
			}
		}
		if lines := logLines(orch.log, regexp.MustCompile(`configuration reloaded.*scaled=\[e2e\]`)); len(lines) != 1 {
			t.Errorf("reload log lines: %v", lines)
		}
	})

	// Drain: SIGTERM, the idle VMs go, the process exits 0.
	orch.terminate(t)
	orch.waitExit(t, 2*time.Minute)
	assertNothingLeft(t, ns, gitea, state, "fae2e0")

	// Figures for the closing note: guest-side time from kernel start to
	// the runner being registered and polling, and push to job start.
	var ready []string
	for _, l := range logLines(orch.log, regexp.MustCompile(`event=runner-ready`)) {
		if m := regexp.MustCompile(`guest_uptime=(\S+)`).FindStringSubmatch(l); m != nil {
			ready = append(ready, m[1])
		}
	}
	sort.Strings(ready)
	t.Logf("FIGURE guest kernel start -> runner ready (guest CLOCK_BOOTTIME), %d VMs: %v", len(ready), ready)
	t.Logf("FIGURE push -> job start (min_idle VM waiting): %s", pushToStart.Round(time.Millisecond))
}
