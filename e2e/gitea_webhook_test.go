//go:build e2e

package e2e

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"
)

const hookWorkflow = `on: [push]
jobs:
  hello:
    runs-on: fireactions-hook
    steps:
      - run: echo "fireactions-vm=$(hostname)"
`

// TestGiteaWebhookStartsTheVMBeforeThePoll: the real Gitea (1.26) sends a
// signed workflow_job webhook to the orchestrator's API; the job's VM
// starts from it, without waiting for the poll (one reconcile pass every
// 30 s here). Then, the webhook deleted, the same push is served by the
// poll. Each is timed from the push to the VM's record appearing (the
// pool started it), side by side; the figures are in
// docs/performance.md. The jobs complete and no runner is left.
func TestGiteaWebhookStartsTheVMBeforeThePoll(t *testing.T) {
	const apiPort, poll = "8491", 30 * time.Second
	r := newGiteaRig(t, "fa-ghook")
	cfg := r.config("hook", r.work, "faghook0", "10.247.0.0/24")
	cfg.ReconcileInterval = poll.String()
	cfg.Metrics = &metricsConfig{Listen: ""}
	cfg.Pools = []poolConfig{r.pool("hook", "fireactions-hook", 0, 1)}
	secret := r.withWebhooks(cfg, apiPort)
	o := r.start(cfg)

	r.gitea.api(http.MethodPost, "/api/v1/user/repos", map[string]any{"name": "h", "default_branch": "main"}, nil)
	hook := r.gitea.addHook("ci/h", "http://127.0.0.1:"+apiPort+"/webhooks/gitea", secret)
	tree := filepath.Join(r.work, "repo-h")
	writeFile(t, filepath.Join(tree, ".gitea/workflows/hook.yml"), 0o644, hookWorkflow)

	// pushToVM pushes and times the push to the first VM record, and the
	// job's creation at Gitea (its created_at, whole seconds) to it.
	pushToVM := func(msg string) (fromPush, fromJob time.Duration) {
		t.Helper()
		// Let a reconcile pass go by first, so the poll's phase is
		// not the push's.
		time.Sleep(poll / 3)
		pushed := time.Now()
		r.gitea.push(tree, "ci/h", msg)
		o.waitFor(t, 2*poll, "a VM for the job ("+msg+")", func() bool { return len(vmDirs(r.state)) > 0 })
		started := time.Now()
		var created time.Time
		for _, j := range r.gitea.jobs("ci/h") {
			if j.CreatedAt.After(created) {
				created = j.CreatedAt
			}
		}
		return started.Sub(pushed), started.Sub(created)
	}

	// 1. Webhook.
	viaHook, hookFromJob := pushToVM("by webhook")
	log, _ := os.ReadFile(o.log)
	delivered := regexp.MustCompile(`gitea webhook.*action=queued.*changed=true`)
	if !delivered.Match(log) {
		t.Fatalf("no workflow_job delivery changed the queue; the orchestrator's log:\n%s", tail(log, 8<<10))
	}
	o.waitJobsDone(t, 10*time.Minute, "the webhook's job to complete", r.gitea, "ci/h", 1)
	o.waitFor(t, 3*time.Minute, "the webhook's VM to be gone", func() bool { return len(vmDirs(r.state)) == 0 })

	// 2. Polling: the webhook deleted.
	r.gitea.api(http.MethodDelete, "/api/v1/repos/ci/h/hooks/"+strconv.FormatInt(hook, 10), nil, nil)
	viaPoll, pollFromJob := pushToVM("by polling")
	o.waitJobsDone(t, 10*time.Minute, "the polled job to complete", r.gitea, "ci/h", 2)
	o.waitFor(t, 3*time.Minute, "no runner left", func() bool { return r.gitea.runnerCount() == 0 })

	t.Logf("push to VM start: webhook %s, polling (reconcile every %s) %s; job created at Gitea to VM start: webhook %s, polling %s",
		viaHook.Round(10*time.Millisecond), poll, viaPoll.Round(10*time.Millisecond),
		hookFromJob.Round(10*time.Millisecond), pollFromJob.Round(10*time.Millisecond))
	fmt.Fprintf(os.Stderr, "FIGURE gitea push->vm webhook=%s poll=%s; job->vm webhook=%s poll=%s; interval=%s\n",
		viaHook, viaPoll, hookFromJob, pollFromJob, poll)
	if viaHook >= viaPoll {
		t.Errorf("the webhook (%s) was no faster than polling (%s)", viaHook, viaPoll)
	}
}
