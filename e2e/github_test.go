//go:build e2e

package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/internal/double/githubdouble"
)

const (
	ghPort    = "8951" // the GitHub double, on every address of the namespace
	ghAPIPort = "8953" // the orchestrator's API (webhooks), on 127.0.0.1
	ghLabel   = "fa-gh-e2e"
	ghAppID   = 31337
	ghGateway = "10.205.0.1"
)

// TestGitHubJobsRunInTheirOwnMicroVMs runs GitHub Actions jobs for real
// in QEMU guests against the GitHub double (GitHub and its .NET runner
// cannot run here), every exchange held to GitHub's API description. The
// orchestrator, as a GitHub App, registers a JIT runner per VM; the
// guest's stand-in run.sh proves it got exactly its own JIT configuration
// and nothing scope-wide, takes one job, "runs" it and exits. Demand comes
// by signed webhooks and polling. A job no pool can serve starts nothing.
// Then 30 % of API calls fail (5xx, timeouts, answers lost after acting,
// 429 with Retry-After) and 30 % of webhooks are lost: every job still
// runs, and no runner is left at GitHub.
func TestGitHubJobsRunInTheirOwnMicroVMs(t *testing.T) {
	r := newGitHubRig(t, "fagh")
	key, keyPEM, examples, state, ns := r.key, r.keyPEM, r.examples, r.state, r.ns
	spec, hookSecret := r.spec, r.hookSecret
	d := githubdouble.New(githubdouble.Options{
		Spec: spec, AppID: ghAppID, AppKey: &key.PublicKey, RunnerURL: "http://" + ghGateway + ":" + ghPort, Seed: 42,
	})
	t.Cleanup(d.Close)
	d.AddInstallation("Organization", "acme")
	r.serve(d, ghPort)

	qemuBin, booted := capturingQEMU(t)
	cfg := r.config("ghe2e", "fagh0", "10.205.0.0/24", ghPort, ghAPIPort, ghAppID, "2s")
	cfg.VMM = &vmmConfig{QEMU: &qemuConfig{Binary: qemuBin}}
	cfg.DrainGrace = "3m"
	cfg.Pools = []poolConfig{r.pool("gh", []string{ghLabel, "linux"}, 2)} // self-hosted is implied

	started := time.Now()
	orch := r.start(cfg)
	hc := ns.httpClient()
	orch.waitFor(t, time.Minute, "the API", func() bool {
		resp, err := hc.Get("http://127.0.0.1:" + ghAPIPort + "/healthz")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == 200
	})
	if err := d.SetWebhook(githubdouble.WebhookTarget{
		URL: "http://127.0.0.1:" + ghAPIPort + "/webhooks/github", Secret: hookSecret, Client: hc, Examples: examples,
	}); err != nil {
		t.Fatal(err)
	}
	scan := scanInitramfs(t, d, state, booted, keyPEM, hookSecret)

	// Phase A: three jobs (labels in any case, self-hosted or not), each
	// in its own VM; a gpu job starts none.
	served := []githubdouble.Job{
		d.QueueJob("acme/widgets", "self-hosted", ghLabel),
		d.QueueJob("acme/widgets", strings.ToUpper(ghLabel)),
		d.QueueJob("acme/widgets", "self-hosted", "linux", ghLabel),
	}
	gpu := d.QueueJob("acme/widgets", "self-hosted", "gpu")
	orch.waitFor(t, 8*time.Minute, "the 3 served jobs to complete", func() bool { return ghCompleted(d, served) })
	t.Logf("FIGURE 3 GitHub jobs (max 2 VMs at once) done %s after the orchestrator started", time.Since(started).Round(time.Second))
	orch.waitFor(t, 2*time.Minute, "their VMs and runners to be gone", func() bool {
		return len(vmDirs(state)) == 0 && len(d.Runners()) == 0
	})
	if n := len(logLines(orch.log, regexp.MustCompile(`msg="vm booting"`))); n != len(served) {
		t.Fatalf("%d VMs started for %d servable jobs (the gpu job must start none)", n, len(served))
	}
	if n := len(logLines(orch.log, regexp.MustCompile(fmt.Sprintf(`no pool serves this job's labels.*job=%d\b`, gpu.ID)))); n != 1 {
		t.Fatalf("the unservable gpu job was reported %d times, want once", n)
	}
	checkGitHubReports(t, d, served, keyPEM, hookSecret)
	d.SetJobStatus(gpu.ID, "completed", "cancelled")

	// Phase B: faults on 30 % of API calls and webhooks.
	d.SetFaults(githubdouble.Faults{Rate: 0.3, Kinds: githubdouble.AllFaults, Hang: 30 * time.Second})
	d.SetWebhookFaults(0.3, 0.2)
	faulted := []githubdouble.Job{
		d.QueueJob("acme/widgets", ghLabel),
		d.QueueJob("acme/widgets", "linux"),
		d.QueueJob("acme/widgets", "self-hosted", ghLabel),
	}
	phaseB := time.Now()
	orch.waitFor(t, 10*time.Minute, "the jobs to complete through the faults", func() bool { return ghCompleted(d, faulted) })
	orch.waitFor(t, 3*time.Minute, "no VM and no runner left after the faults", func() bool {
		return len(vmDirs(state)) == 0 && len(d.Runners()) == 0
	})
	t.Logf("FIGURE 3 GitHub jobs through 30%% faults done in %s; faults injected %v; webhooks (sent, dropped, failed) %v",
		time.Since(phaseB).Round(time.Second), d.FaultCounts(), fmt.Sprint(d.Deliveries()))
	checkGitHubReports(t, d, append(served, faulted...), keyPEM, hookSecret)
	if len(d.FaultCounts()) == 0 {
		t.Fatal("no fault was injected: phase B tested nothing")
	}
	d.SetFaults(githubdouble.Faults{})

	// Drain: SIGTERM, exit 0, nothing left anywhere.
	orch.terminate(t)
	orch.waitExit(t, 2*time.Minute)
	if rs := d.Runners(); len(rs) != 0 {
		t.Errorf("the double lists %d runners after the drain: %+v", len(rs), rs)
	}
	for _, p := range qemuProcesses() {
		if strings.Contains(p, state) {
			t.Errorf("QEMU process left: %s", p)
		}
	}
	for _, l := range ns.links(t) {
		if strings.HasPrefix(l, "fa") && l != "fagh0" {
			t.Errorf("TAP left: %s", l)
		}
	}
	if left := vmDirs(state); len(left) != 0 {
		t.Errorf("VM directories left: %v", left)
	}
	checked := scan.stop()
	if checked < len(served)+len(faulted) {
		t.Errorf("only %d VM initramfs files were checked for secrets", checked)
	}
	logText, _ := os.ReadFile(orch.log)
	for what, s := range ghSecrets(d, keyPEM, hookSecret) {
		if bytes.Contains(logText, []byte(s)) {
			t.Errorf("the orchestrator log holds %s", what)
		}
	}
	for _, v := range d.Violations() {
		t.Errorf("GitHub's description violated: %s", v)
	}
	calls := d.Calls()
	t.Logf("FIGURE API calls: %d in all for %d jobs: %v", d.TotalCalls(), len(served)+len(faulted), calls)
	var ready []string
	for _, l := range logLines(orch.log, regexp.MustCompile(`event=runner-ready`)) {
		if m := regexp.MustCompile(`guest_uptime=(\S+)`).FindStringSubmatch(l); m != nil {
			ready = append(ready, m[1])
		}
	}
	t.Logf("FIGURE guest kernel start -> stand-in runner listening (guest CLOCK_BOOTTIME), %d VMs: %v", len(ready), ready)
}

func buildGitHubStandin(t *testing.T, dir string) string {
	t.Helper()
	out := filepath.Join(dir, "run.sh")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, "../internal/double/githubdouble/cmd/actions-runner")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the stand-in runner: %v\n%s", err, b)
	}
	return out
}

func ghCompleted(d *githubdouble.Double, jobs []githubdouble.Job) bool {
	done := map[int64]bool{}
	for _, j := range d.Jobs() {
		done[j.ID] = j.Status == "completed" && j.Conclusion == "success"
	}
	for _, j := range jobs {
		if !done[j.ID] {
			return false
		}
	}
	return true
}

// ghSecrets are what no guest and no log may hold: the App's key, every
// installation token and the webhook secret.
func ghSecrets(d *githubdouble.Double, keyPEM []byte, hookSecret string) map[string]string {
	body := strings.Split(string(keyPEM), "\n")[1] // a line of the key's base64
	out := map[string]string{"the App key": body, "the webhook secret": hookSecret}
	for i, tok := range d.Tokens() {
		out[fmt.Sprintf("installation token %d", i)] = tok
	}
	for name, jit := range d.IssuedJITs() {
		out["the JIT configuration of "+name] = jit
	}
	return out
}

// checkGitHubReports checks each job's runner: it ran one job, got
// exactly its own JIT configuration, in its environment only, and saw
// nothing scope-wide.
func checkGitHubReports(t *testing.T, d *githubdouble.Double, jobs []githubdouble.Job, keyPEM []byte, hookSecret string) {
	t.Helper()
	reports := map[int64]githubdouble.RunnerReport{}
	for _, r := range d.Reports() {
		if _, dup := reports[r.JobID]; dup {
			t.Errorf("job %d reported twice", r.JobID)
		}
		reports[r.JobID] = r
	}
	runners := map[string]int64{}
	secrets := ghSecrets(d, keyPEM, hookSecret)
	for _, j := range jobs {
		r, ok := reports[j.ID]
		if !ok {
			t.Errorf("job %d has no runner report", j.ID)
			continue
		}
		if prev, dup := runners[r.RunnerName]; dup {
			t.Errorf("runner %s ran jobs %d and %d", r.RunnerName, prev, j.ID)
		}
		runners[r.RunnerName] = j.ID
		if !r.Issued {
			t.Errorf("runner %s got a JIT configuration that is not its own", r.RunnerName)
		}
		if strings.Join(r.Argv, " ") != "/home/runner/run.sh" {
			t.Errorf("runner %s started as %q: want run.sh with no arguments", r.RunnerName, r.Argv)
		}
		env := strings.Join(r.Env, "\n")
		if !strings.Contains(env, "ACTIONS_RUNNER_INPUT_JITCONFIG="+r.JIT) {
			t.Errorf("runner %s did not get its JIT configuration from its environment", r.RunnerName)
		}
		for what, s := range secrets {
			if what == "the JIT configuration of "+r.RunnerName {
				continue
			}
			if strings.Contains(env, s) || strings.Contains(strings.Join(r.Argv, " "), s) {
				t.Errorf("runner %s saw %s", r.RunnerName, what)
			}
		}
	}
}

// initramfsScan checks every VM's initramfs, while the VM exists, for
// its own JIT configuration (the positive control) and for anything
// scope-wide or another runner's.
type initramfsScan struct {
	stopCh chan struct{}
	done   chan struct{}
	mu     sync.Mutex
	seen   map[string]bool
}

func scanInitramfs(t *testing.T, d *githubdouble.Double, state, booted string, keyPEM []byte, hookSecret string) *initramfsScan {
	s := &initramfsScan{stopCh: make(chan struct{}), done: make(chan struct{}), seen: map[string]bool{}}
	go func() {
		defer close(s.done)
		for {
			select {
			case <-s.stopCh:
				return
			case <-time.After(300 * time.Millisecond):
			}
			for id := range vmDirs(state) {
				if s.checked(id) {
					continue
				}
				raw, err := os.ReadFile(capturedInitramfs(booted, id))
				if err != nil {
					continue // not written yet, or gone
				}
				name := "fa-ghe2e-" + id
				secrets := ghSecrets(d, keyPEM, hookSecret)
				own, ok := secrets["the JIT configuration of "+name]
				if !ok {
					continue
				}
				visible := string(visibleBytes(raw))
				if !strings.Contains(visible, own) {
					t.Errorf("vm %s: its own JIT configuration is not in its initramfs: the check is broken", id)
				}
				for what, sec := range secrets {
					if sec != own && strings.Contains(visible, sec) {
						t.Errorf("vm %s: %s is in its initramfs", id, what)
					}
				}
				for _, p := range qemuProcesses() {
					if strings.Contains(p, own) {
						t.Errorf("a JIT configuration is on a QEMU command line")
					}
				}
				s.mu.Lock()
				s.seen[id] = true
				s.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() { s.stop() })
	return s
}

func (s *initramfsScan) checked(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seen[id]
}

// stop ends the scan and returns how many VMs it checked.
func (s *initramfsScan) stop() int {
	select {
	case <-s.stopCh:
	default:
		close(s.stopCh)
	}
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.seen)
}
