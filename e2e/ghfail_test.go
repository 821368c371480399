//go:build e2e

package e2e

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/guestroot"
	"github.com/nixos-fireactions/nixos-fireactions/internal/double/githubdouble"
)

const (
	ghfPort    = "8961" // the GitHub double, on every address of the namespace
	ghfAPIPort = "8963" // the orchestrator's API (webhooks), on 127.0.0.1
	ghfLabel   = "fa-ghfail"
	ghfAppID   = 31338
	ghfGateway = "10.231.0.1"
)

// TestGitHubRunnerDeathCancelsItsRun: in a real QEMU guest, a job kills
// its runner (the stand-in run.sh exits after "Running job:"). The
// orchestrator, as a GitHub App with actions: write, cancels the job's
// workflow run at the GitHub double within seconds (force-cancelled: the
// dead runner cannot stop its job), the run's other queued job is
// cancelled with it, the dead runner is removed, and the next job runs.
func TestGitHubRunnerDeathCancelsItsRun(t *testing.T) {
	requireRoot(t)
	kernel, modules := hostKernel(t)
	bin := buildBinaries(t)
	work := t.TempDir()
	standin := buildGitHubStandin(t, work)
	root := filepath.Join(work, "root.cpio.gz")
	if err := guestroot.Build(context.Background(), guestroot.DefaultSpec(standin, "/home/runner/run.sh"), root); err != nil {
		t.Fatal(err)
	}
	ns := newNetns(t, fmt.Sprintf("ghf%d", os.Getpid()%100000))

	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	spec, err := githubdouble.LoadSpec("../forge/github/testdata/github-actions-runners.openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	examples, err := os.ReadFile("../forge/github/testdata/github-workflow_job.examples.json")
	if err != nil {
		t.Fatal(err)
	}
	d := githubdouble.New(githubdouble.Options{
		Spec: spec, AppID: ghfAppID, AppKey: &key.PublicKey, RunnerURL: "http://" + ghfGateway + ":" + ghfPort, Seed: 24,
	})
	t.Cleanup(d.Close)
	inst := d.AddInstallation("Organization", "acme")
	d.SetPermissions(inst, map[string]string{"organization_self_hosted_runners": "write", "administration": "write", "actions": "write"})
	var mu sync.Mutex
	taken := map[int64]time.Time{} // job -> when a runner took it
	d.OnAcquire(func(j githubdouble.Job) {
		mu.Lock()
		defer mu.Unlock()
		taken[j.ID] = time.Now()
	})
	ln, err := ns.listen("tcp", "0.0.0.0:"+ghfPort)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: d, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	hookSecret, apiToken := "hook-"+randHex(t), "api-"+randHex(t)
	writeFile(t, filepath.Join(work, "app.pem"), 0o600, string(keyPEM))
	writeFile(t, filepath.Join(work, "hook"), 0o600, hookSecret+"\n")
	writeFile(t, filepath.Join(work, "api-tokens"), 0o600, apiToken+"\n")
	state, err := os.MkdirTemp("", "ghf") // short: socket paths must fit
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(state) })
	cfgPath := filepath.Join(work, "fireactions.yaml")
	writeFile(t, cfgPath, 0o600, fmt.Sprintf(`host_id: ghfail
state_dir: %[1]s
log: {level: debug}
drain_grace: 1m
api: {socket: %[2]s/api.sock, listen: "127.0.0.1:%[3]s", tokens_file: %[2]s/api-tokens}
metrics: {listen: ""}
network:
  bridge: faghf0
  cidr: 10.231.0.0/24
  allow_tcp_ports: [%[4]s]   # the GitHub double on the gateway
forges:
  - name: github
    type: github
    url: http://127.0.0.1:%[4]s
    app_id: %[5]d
    app_private_key_file: %[2]s/app.pem
    webhook_secret_file: %[2]s/hook
    poll_interval: 5s
pools:
  - name: ghf
    forge: github
    scope: org:acme
    repos: [acme/widgets]
    labels: [%[6]s]
    max: 1
    vm:
      vcpus: 1
      memory_mib: 512
      kernel: %[7]s
      modules_dir: %[8]s
      kernel_modules: [virtio_mmio, virtio_net]
      root_initramfs: %[9]s
    runner:
      uid: 1001
    timeouts:
      boot: 2m
      idle: 20s
      job: 10m
`, state, work, ghfAPIPort, ghfPort, ghfAppID, ghfLabel, kernel, modules, root))

	orch := startOrchestrator(t, ns, bin, cfgPath, state)
	hc := ns.httpClient()
	orch.waitFor(t, time.Minute, "the API", func() bool {
		resp, err := hc.Get("http://127.0.0.1:" + ghfAPIPort + "/healthz")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == 200
	})
	if err := d.SetWebhook(githubdouble.WebhookTarget{
		URL: "http://127.0.0.1:" + ghfAPIPort + "/webhooks/github", Secret: hookSecret, Client: hc, Examples: examples,
	}); err != nil {
		t.Fatal(err)
	}

	jobs := d.QueueRun("acme/widgets",
		githubdouble.JobSpec{Name: "fork-bomb", Labels: []string{ghfLabel}, KillsRunner: true},
		githubdouble.JobSpec{Name: "deploy", Labels: []string{"gpu"}}) // no pool serves it: it waits in the run
	var cancelledAt time.Time
	orch.waitFor(t, 5*time.Minute, "the dead runner's run to be cancelled", func() bool {
		r, _ := d.RunByID(jobs[0].RunID)
		if r.Status == "completed" {
			cancelledAt = time.Now()
			return true
		}
		return false
	})
	mu.Lock()
	took := taken[jobs[0].ID]
	mu.Unlock()
	if r, _ := d.RunByID(jobs[0].RunID); r.Conclusion != "cancelled" {
		t.Fatalf("the run ended %q, want cancelled", r.Conclusion)
	}
	for _, j := range d.Jobs() {
		if (j.ID == jobs[0].ID || j.ID == jobs[1].ID) && j.Conclusion != "cancelled" {
			t.Errorf("job %d of the run ended %s/%s, want cancelled", j.ID, j.Status, j.Conclusion)
		}
	}
	if took.IsZero() || cancelledAt.Sub(took) > 30*time.Second {
		t.Fatalf("the run was cancelled %s after its runner took the job, want within 30s", cancelledAt.Sub(took))
	}
	t.Logf("FIGURE runner took the job -> its run cancelled at GitHub: %s (runner exit, VM teardown, cancel, force-cancel)",
		cancelledAt.Sub(took).Round(100*time.Millisecond))
	if n := len(logLines(orch.log, regexp.MustCompile(`force-cancelled: its runner died`))); n != 1 {
		t.Errorf("%d log lines say the run was force-cancelled, want 1", n)
	}
	calls := d.Calls()
	if calls["actions/cancel-workflow-run"] != 1 || calls["actions/force-cancel-workflow-run"] != 1 {
		t.Errorf("cancel calls %d, force-cancel calls %d, want 1 and 1",
			calls["actions/cancel-workflow-run"], calls["actions/force-cancel-workflow-run"])
	}

	// The pool goes on: the next job runs in a fresh VM.
	next := d.QueueJob("acme/widgets", ghfLabel)
	orch.waitFor(t, 5*time.Minute, "the next job to complete", func() bool { return ghCompleted(d, []githubdouble.Job{next}) })
	orch.waitFor(t, 2*time.Minute, "no VM and no runner left", func() bool {
		return len(vmDirs(state)) == 0 && len(d.Runners()) == 0
	})
	orch.terminate(t)
	orch.waitExit(t, 2*time.Minute)
	for _, v := range d.Violations() {
		t.Errorf("GitHub's description violated: %s", v)
	}
}
