//go:build e2e

package e2e

import (
	"regexp"
	"sync"
	"testing"
	"time"

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
	r := newGitHubRig(t, "ghf")
	key, examples, state, ns := r.key, r.examples, r.state, r.ns
	spec, hookSecret := r.spec, r.hookSecret
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
	r.serve(d, ghfPort)

	cfg := r.config("ghfail", "faghf0", "10.231.0.0/24", ghfPort, ghfAPIPort, ghfAppID, "5s")
	cfg.Pools = []poolConfig{r.pool("ghf", []string{ghfLabel}, 1)}
	orch := r.start(cfg)
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
