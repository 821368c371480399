package github_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
	"github.com/nixos-fireactions/nixos-fireactions/forge"
	"github.com/nixos-fireactions/nixos-fireactions/forge/github"
	"github.com/nixos-fireactions/nixos-fireactions/internal/double/githubdouble"
)

// actionsWrite is what an App installation needs to cancel runs.
var actionsWrite = map[string]string{"organization_self_hosted_runners": "write", "administration": "write", "actions": "write"}

// deliveries hands the double's webhooks to the pool's forge, and tells the test
// of each "action job" handled.
func deliveries(t *testing.T, e *env, c *github.Client) <-chan string {
	t.Helper()
	seen := make(chan string, 64)
	hooks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(strings.NewReader(string(body)))
		c.ServeWebhook(w, r, func() {})
		var ev struct {
			Action string `json:"action"`
			Job    struct {
				ID int64 `json:"id"`
			} `json:"workflow_job"`
		}
		if json.Unmarshal(body, &ev) == nil {
			seen <- ev.Action + " " + itoa(ev.Job.ID)
		}
	}))
	t.Cleanup(hooks.Close)
	examples, err := os.ReadFile(hooksPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.d.SetWebhook(githubdouble.WebhookTarget{URL: hooks.URL, Secret: hookSecret, Examples: examples}); err != nil {
		t.Fatal(err)
	}
	return seen
}

// await waits for the delivery want ("in_progress 123").
func await(t *testing.T, seen <-chan string, want string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		select {
		case got := <-seen:
			if got == want {
				return
			}
		case <-ctx.Done():
			t.Fatalf("no delivery %q", want)
		}
	}
}

// dyingRunner registers a runner of the pool and runs it as the guest
// would: it takes a job (one queued with KillsRunner) and dies.
func dyingRunner(t *testing.T, p *github.Pool, name string) forge.RunnerRef {
	t.Helper()
	r, err := p.Register(context.Background(), forge.RunnerSpec{Name: name, Labels: []string{"linux"}, Guest: guest})
	if err != nil {
		t.Fatal(err)
	}
	jit := strings.TrimPrefix(r.Guest.Env[0], github.JITConfigEnv+"=")
	err = githubdouble.RunStandIn(context.Background(), githubdouble.StandIn{JIT: jit, Out: io.Discard})
	if !errors.Is(err, githubdouble.ErrKilledByJob) {
		t.Fatalf("the runner did not die of its job: %v", err)
	}
	return r.RunnerRef
}

func jobState(t *testing.T, d *githubdouble.Double, id int64) string {
	t.Helper()
	for _, j := range d.Jobs() {
		if j.ID == id {
			return j.Status + "/" + j.Conclusion
		}
	}
	t.Fatalf("no job %d", id)
	return ""
}

// A runner that died in its job, learnt of from webhooks: FailJob
// cancels the job's workflow run, with the App's installation token,
// and since the dead runner cannot stop its job, force-cancels it: the
// job, and the run's other jobs, end as cancelled at once, and the
// runner, no longer busy, can be removed. Asked again, the job has ended.
func TestFailJobCancelsTheRunOfTheDeadRunnersJob(t *testing.T) {
	e := newEnv(t, envOptions{})
	inst := e.d.AddInstallation("Organization", "acme")
	e.d.SetPermissions(inst, actionsWrite)
	c := e.app(func(o *github.Options) { o.WebhookSecret = hookSecret })
	// Webhooks only: the pool polls no repository.
	p := e.pool(c, github.PoolOptions{Scope: github.Scope{Kind: "org", Org: "acme"}, Labels: []string{"linux"}})
	seen := deliveries(t, e, c)
	jobs := e.d.QueueRun("acme/widgets",
		githubdouble.JobSpec{Name: "fork-bomb", Labels: []string{"linux"}, KillsRunner: true},
		githubdouble.JobSpec{Name: "deploy", Labels: []string{"gpu"}})
	ref := dyingRunner(t, p, "fa-t-dies")
	await(t, seen, "in_progress "+itoa(jobs[0].ID))

	ctx := context.Background()
	if err := p.FailJob(ctx, ref, "", "runner exit code 2"); err != nil {
		t.Fatalf("FailJob: %v", err)
	}
	for _, j := range jobs {
		if got := jobState(t, e.d, j.ID); got != "completed/cancelled" {
			t.Errorf("job %s is %s, want completed/cancelled", j.Repo, got)
		}
	}
	if r, _ := e.d.RunByID(jobs[0].RunID); r.Status != "completed" || r.Conclusion != "cancelled" {
		t.Errorf("run %+v, want completed and cancelled", r)
	}
	if calls := e.d.Calls(); calls["actions/cancel-workflow-run"] != 1 || calls["actions/force-cancel-workflow-run"] != 1 {
		t.Errorf("cancel calls %d, force-cancel calls %d; want 1 and 1",
			calls["actions/cancel-workflow-run"], calls["actions/force-cancel-workflow-run"])
	}
	if err := p.Remove(ctx, ref); err != nil {
		t.Fatalf("remove the dead runner after its job ended: %v", err)
	}
	if err := p.FailJob(ctx, ref, "", "runner exit code 2"); !errors.Is(err, forge.ErrJobEnded) {
		t.Fatalf("FailJob of a job that ended: %v, want ErrJobEnded", err)
	}
	e.noSecretsLogged()
}

// Without a delivery naming the runner's job (deliveries lost, or
// webhooks off), FailJob finds it among the in-progress runs of the
// pool's repositories; a PAT (classic) with the repo scope may cancel.
func TestFailJobFindsTheJobByListingRuns(t *testing.T) {
	e := newEnv(t, envOptions{pats: []string{"ghp_fail"}})
	c, err := github.New(github.Options{Name: "gh", URL: e.url, Token: "ghp_fail", PollInterval: time.Hour, Retry: fastRetry})
	if err != nil {
		t.Fatal(err)
	}
	p := e.pool(c, github.PoolOptions{Scope: github.Scope{Kind: "repo", Owner: "acme", Repo: "widgets"}, Labels: []string{"linux"}})
	e.d.QueueRun("acme/widgets", githubdouble.JobSpec{Labels: []string{"gpu"}}) // another run, left alone
	job := e.d.QueueRun("acme/widgets", githubdouble.JobSpec{Labels: []string{"linux"}, KillsRunner: true})[0]
	ref := dyingRunner(t, p, "fa-t-polled")
	if err := p.FailJob(context.Background(), ref, "", "the VM crashed"); err != nil {
		t.Fatalf("FailJob: %v", err)
	}
	if got := jobState(t, e.d, job.ID); got != "completed/cancelled" {
		t.Fatalf("the dead runner's job is %s, want completed/cancelled", got)
	}
	for _, j := range e.d.Jobs() {
		if j.RunID != job.RunID && j.Status != "queued" {
			t.Errorf("job %d of another run is %s", j.ID, j.Status)
		}
	}
}

// A job that ended before FailJob (its runner reported the result, then
// died; or someone cancelled it) is left as it is: ErrJobEnded, and no
// run is cancelled. GitHub answers slowly here (400ms a call, as the
// double does under -race on a loaded machine): the tests' retry
// options wait for slow answers.
func TestFailJobLeavesAJobThatEnded(t *testing.T) {
	e := newEnv(t, envOptions{})
	inst := e.d.AddInstallation("Organization", "acme")
	e.d.SetPermissions(inst, actionsWrite)
	p := e.pool(e.app(), github.PoolOptions{Scope: github.Scope{Kind: "org", Org: "acme"}, Repos: []string{"acme/widgets"}, Labels: []string{"linux"}})
	job := e.d.QueueRun("acme/widgets", githubdouble.JobSpec{Labels: []string{"linux"}, KillsRunner: true})[0]
	ref := dyingRunner(t, p, "fa-t-ended")
	e.slow(400 * time.Millisecond)
	if err := p.Reconcile(context.Background()); err != nil { // the driver sees the job in progress
		t.Fatal(err)
	}
	e.d.SetJobStatus(job.ID, "completed", "failure")
	if err := p.FailJob(context.Background(), ref, "", "runner exit code 1"); !errors.Is(err, forge.ErrJobEnded) {
		t.Fatalf("FailJob of an ended job: %v, want ErrJobEnded", err)
	}
	if got := jobState(t, e.d, job.ID); got != "completed/failure" {
		t.Fatalf("the ended job became %s", got)
	}
	if n := e.d.Calls()["actions/cancel-workflow-run"] + e.d.Calls()["actions/force-cancel-workflow-run"]; n != 0 {
		t.Fatalf("%d cancel calls for a job that had ended", n)
	}
}

// The job is the one GitHub says the runner took, never the one the
// guest names: a runner that took no job fails nothing, whatever job id
// its guest reports (GitHub says it is not busy: no job of it runs), and
// another runner's run is not cancelled.
func TestFailJobNeverCancelsARunTheRunnerDidNotRun(t *testing.T) {
	e := newEnv(t, envOptions{})
	inst := e.d.AddInstallation("Organization", "acme")
	e.d.SetPermissions(inst, actionsWrite)
	p := e.pool(e.app(), github.PoolOptions{Scope: github.Scope{Kind: "org", Org: "acme"}, Repos: []string{"acme/widgets"}, Labels: []string{"linux"}})
	victim := e.d.QueueRun("acme/widgets", githubdouble.JobSpec{Labels: []string{"linux"}, KillsRunner: true})[0]
	dyingRunner(t, p, "fa-t-other") // another runner took it
	r, err := p.Register(context.Background(), forge.RunnerSpec{Name: "fa-t-idle", Labels: []string{"linux"}, Guest: guest})
	if err != nil {
		t.Fatal(err)
	}
	err = p.FailJob(context.Background(), r.RunnerRef, itoa(victim.ID), "runner exit code 1")
	if !errors.Is(err, forge.ErrJobEnded) { // GitHub says the runner is not busy: no job of it runs
		t.Fatalf("FailJob of a runner that took no job: %v, want ErrJobEnded", err)
	}
	if got := jobState(t, e.d, victim.ID); got != "in_progress/" {
		t.Fatalf("another runner's job became %s", got)
	}
	if n := e.d.Calls()["actions/cancel-workflow-run"]; n != 0 {
		t.Fatalf("%d cancel calls", n)
	}
}

// An App installation without actions:write cannot cancel runs, as on
// GitHub: FailJob says so (an error, not an answer the pool takes for
// done), and the job is left running.
func TestFailJobRefusedWithoutActionsWrite(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.d.AddInstallation("Organization", "acme") // actions: read
	p := e.pool(e.app(), github.PoolOptions{Scope: github.Scope{Kind: "org", Org: "acme"}, Repos: []string{"acme/widgets"}, Labels: []string{"linux"}})
	job := e.d.QueueRun("acme/widgets", githubdouble.JobSpec{Labels: []string{"linux"}, KillsRunner: true})[0]
	ref := dyingRunner(t, p, "fa-t-refused")
	err := p.FailJob(context.Background(), ref, "", "runner exit code 1")
	if err == nil || errors.Is(err, forge.ErrJobEnded) || !strings.Contains(err.Error(), "403") {
		t.Fatalf("FailJob without actions:write: %v, want GitHub's 403", err)
	}
	if got := jobState(t, e.d, job.ID); got != "in_progress/" {
		t.Fatalf("the job became %s", got)
	}
}

// The pool manager and the driver together: a VM whose runner dies in
// its job (exit code 1 after "Running job:") has the job's workflow run
// cancelled at GitHub before its runner is removed, without waiting for
// GitHub's own clean-up; the run's other jobs are cancelled with it.
func TestPoolCancelsTheRunWhenItsRunnerDies(t *testing.T) {
	e := newEnv(t, envOptions{pats: []string{"p"}})
	c, _ := github.New(github.Options{Name: "github", URL: e.url, Token: "p", PollInterval: time.Hour, Retry: fastRetry})
	p := e.pool(c, github.PoolOptions{Scope: github.Scope{Kind: "repo", Owner: "acme", Repo: "w"}, Labels: []string{"linux"}})
	jobs := e.d.QueueRun("acme/w",
		githubdouble.JobSpec{Name: "fork-bomb", Labels: []string{"linux"}, KillsRunner: true},
		githubdouble.JobSpec{Name: "deploy", Labels: []string{"gpu"}})
	f := newFarm(t, map[string]forge.Forge{"w": p}, poolConfig("w", "repo:acme/w", "linux"))
	m := <-f.hv.started
	m.dieInJob(t)
	// Only the dead runner is awaited: the pool may meanwhile start
	// another VM for a job its view still holds queued (polled hourly).
	dead := "fa-t-" + m.id
	gone := func() bool {
		for _, r := range e.d.Runners() {
			if r.Name == dead {
				return false
			}
		}
		return true
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		r, _ := e.d.RunByID(jobs[0].RunID)
		if r.Status == "completed" && gone() {
			if r.Conclusion != "cancelled" || jobState(t, e.d, jobs[0].ID) != "completed/cancelled" {
				t.Fatalf("run %+v, job %s", r, jobState(t, e.d, jobs[0].ID))
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("run %+v, runners %+v, calls %v", r, e.d.Runners(), e.d.Calls())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// dieInJob is the guest's life when its job kills the runner: runner
// ready, job started, runner exited with code 1, power off.
func (m *fakeMachine) dieInJob(t *testing.T) {
	t.Helper()
	tok := m.cfg.Report.Token
	_ = m.mgr.Report(tok, agentproto.Report{VMID: m.id, Event: agentproto.EventRunnerReady})
	jit := ""
	for _, kv := range m.cfg.Runner.Env {
		if v, ok := strings.CutPrefix(kv, github.JITConfigEnv+"="); ok {
			jit = v
		}
	}
	err := githubdouble.RunStandIn(context.Background(), githubdouble.StandIn{JIT: jit, Out: io.Discard})
	if !errors.Is(err, githubdouble.ErrKilledByJob) {
		t.Fatalf("the runner did not die of its job: %v", err)
	}
	_ = m.mgr.Report(tok, agentproto.Report{VMID: m.id, Event: agentproto.EventJobStarted})
	_ = m.mgr.Report(tok, agentproto.Report{VMID: m.id, Event: agentproto.EventRunnerExited, ExitCode: 1})
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if rec, err := m.mgr.VM(m.id); err != nil || rec.ExitCode != nil {
			break
		}
	}
	m.once.Do(func() { close(m.done) })
}

// cancel_runs chooses what FailJob does: "cancel" only cancels the run
// (the dead runner's job is left to GitHub's cancellation timeout, the
// run's always() jobs to their course); "off" leaves the run alone and
// says the driver does not fail jobs; anything else is refused.
func TestFailJobCancelRunsSetting(t *testing.T) {
	for _, mode := range []string{"cancel", "off"} {
		t.Run(mode, func(t *testing.T) {
			e := newEnv(t, envOptions{})
			inst := e.d.AddInstallation("Organization", "acme")
			e.d.SetPermissions(inst, actionsWrite)
			c := e.app(func(o *github.Options) { o.CancelRuns = mode })
			p := e.pool(c, github.PoolOptions{Scope: github.Scope{Kind: "org", Org: "acme"}, Repos: []string{"acme/widgets"}, Labels: []string{"linux"}})
			job := e.d.QueueRun("acme/widgets", githubdouble.JobSpec{Labels: []string{"linux"}, KillsRunner: true})[0]
			ref := dyingRunner(t, p, "fa-t-"+mode)
			err := p.FailJob(context.Background(), ref, "", "runner exit code 1")
			calls := e.d.Calls()
			run, _ := e.d.RunByID(job.RunID)
			switch mode {
			case "cancel":
				if err != nil || calls["actions/cancel-workflow-run"] != 1 || calls["actions/force-cancel-workflow-run"] != 0 {
					t.Fatalf("FailJob %v; cancel calls %d, force-cancel calls %d; want nil, 1, 0", err,
						calls["actions/cancel-workflow-run"], calls["actions/force-cancel-workflow-run"])
				}
				if !run.Cancelling || jobState(t, e.d, job.ID) != "in_progress/" {
					t.Fatalf("run %+v, job %s: want a cancelling run, its job left to GitHub's timeout", run, jobState(t, e.d, job.ID))
				}
			case "off":
				if !errors.Is(err, errors.ErrUnsupported) || run.Cancelling || calls["actions/get-job-for-workflow-run"] != 0 {
					t.Fatalf("FailJob %v, run %+v, calls %v: want ErrUnsupported and no call", err, run, calls)
				}
			}
		})
	}
	if _, err := github.New(github.Options{URL: "https://api.github.com", Token: "x", CancelRuns: "sometimes"}); err == nil {
		t.Fatal("cancel_runs \"sometimes\" accepted")
	}
}

// Without a delivery naming the runner's job (polling only, an org pool
// without repos, a delivery lost), a job that completed before FailJob
// is found ended from GitHub's word on the runner, without scanning any
// run: once its job completed (here a person force-cancelled the run)
// the runner is not busy, and once removed it is gone; both are
// ErrJobEnded, and no run is cancelled.
func TestFailJobFindsAJobEndedWithoutADelivery(t *testing.T) {
	e := newEnv(t, envOptions{pats: []string{"ghp_person"}})
	inst := e.d.AddInstallation("Organization", "acme")
	e.d.SetPermissions(inst, actionsWrite)
	p := e.pool(e.app(), github.PoolOptions{Scope: github.Scope{Kind: "org", Org: "acme"}, Labels: []string{"linux"}})
	job := e.d.QueueRun("acme/widgets", githubdouble.JobSpec{Labels: []string{"linux"}, KillsRunner: true})[0]
	ref := dyingRunner(t, p, "fa-t-unseen")
	forceCancelAs(t, e, "ghp_person", "acme/widgets", job.RunID)
	if got := jobState(t, e.d, job.ID); got != "completed/cancelled" {
		t.Fatalf("the job is %s after the person's force-cancel", got)
	}
	ctx := context.Background()
	if err := p.FailJob(ctx, ref, "", "runner exit code 1"); !errors.Is(err, forge.ErrJobEnded) {
		t.Fatalf("FailJob of a job that completed, no delivery seen: %v, want ErrJobEnded", err)
	}
	if err := p.Remove(ctx, ref); err != nil {
		t.Fatal(err)
	}
	if err := p.FailJob(ctx, ref, "", "runner exit code 1"); !errors.Is(err, forge.ErrJobEnded) {
		t.Fatalf("FailJob of a runner that is gone: %v, want ErrJobEnded", err)
	}
	calls := e.d.Calls()
	if calls["actions/cancel-workflow-run"] != 0 || calls["actions/force-cancel-workflow-run"] != 1 || calls["actions/list-workflow-runs-for-repo"] != 0 {
		t.Fatalf("calls %v: want the person's force-cancel only, and no scan of runs", calls)
	}
}

// forceCancelAs force-cancels a run as a person with the PAT would.
func forceCancelAs(t *testing.T, e *env, pat, repo string, runID int64) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, e.url+"/repos/"+repo+"/actions/runs/"+itoa(runID)+"/force-cancel", nil)
	req.Header.Set("Authorization", "token "+pat)
	req.Header.Set("Accept", "application/vnd.github+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("force-cancel run %d: %s", runID, resp.Status)
	}
}

// The guest alone must not end other runners' jobs: while another job of
// the dead runner's run runs on (an if: always() clean-up on a live
// runner), the run is only cancelled, never force-cancelled; GitHub ends
// the dead runner's job after its cancellation timeout. (A run whose only
// unfinished job is the dead runner's is force-cancelled at once:
// TestFailJobCancelsTheRunOfTheDeadRunnersJob.)
func TestFailJobDoesNotForceCancelOtherRunnersJobs(t *testing.T) {
	e := newEnv(t, envOptions{})
	inst := e.d.AddInstallation("Organization", "acme")
	e.d.SetPermissions(inst, actionsWrite)
	p := e.pool(e.app(), github.PoolOptions{Scope: github.Scope{Kind: "org", Org: "acme"}, Repos: []string{"acme/widgets"}, Labels: []string{"linux"}})
	jobs := e.d.QueueRun("acme/widgets",
		githubdouble.JobSpec{Name: "fork-bomb", Labels: []string{"linux"}, KillsRunner: true},
		githubdouble.JobSpec{Name: "clean-up", Labels: []string{"gpu"}})
	ref := dyingRunner(t, p, "fa-t-dead")

	// A live runner takes the clean-up job and runs it until released.
	hold := make(chan struct{})
	e.d.OnAcquire(func(j githubdouble.Job) {
		if j.ID == jobs[1].ID {
			<-hold
		}
	})
	live, err := p.Register(context.Background(), forge.RunnerSpec{Name: "fa-t-live", Labels: []string{"gpu"}, Guest: guest})
	if err != nil {
		t.Fatal(err)
	}
	ran := make(chan error, 1)
	go func() {
		jit := strings.TrimPrefix(live.Guest.Env[0], github.JITConfigEnv+"=")
		ran <- githubdouble.RunStandIn(context.Background(), githubdouble.StandIn{JIT: jit, Out: io.Discard})
	}()
	released := false
	release := func() {
		if !released {
			released = true
			close(hold)
			<-ran
		}
	}
	defer release()
	for deadline := time.Now().Add(10 * time.Second); jobState(t, e.d, jobs[1].ID) != "in_progress/"; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the live runner did not take the clean-up job")
		}
	}

	if err := p.FailJob(context.Background(), ref, "", "runner exit code 2"); err != nil {
		t.Fatalf("FailJob: %v", err)
	}
	calls := e.d.Calls()
	if calls["actions/cancel-workflow-run"] != 1 || calls["actions/force-cancel-workflow-run"] != 0 {
		t.Fatalf("cancel calls %d, force-cancel calls %d; want 1 and 0",
			calls["actions/cancel-workflow-run"], calls["actions/force-cancel-workflow-run"])
	}
	if got := jobState(t, e.d, jobs[1].ID); got != "in_progress/" {
		t.Fatalf("the live runner's clean-up job is %s: ended by the dead runner's guest", got)
	}
	if run, _ := e.d.RunByID(jobs[0].RunID); !run.Cancelling || jobState(t, e.d, jobs[0].ID) != "in_progress/" {
		t.Fatalf("run %+v, dead runner's job %s: want a cancelling run, the job left to GitHub's timeout", run, jobState(t, e.d, jobs[0].ID))
	}
	if !strings.Contains(e.log.String(), "not force-cancelled") {
		t.Errorf("no log line says the run was not force-cancelled:\n%s", e.log.String())
	}
	release()
	if got := jobState(t, e.d, jobs[1].ID); !strings.HasPrefix(got, "completed/") {
		t.Errorf("the clean-up job is %s once its runner finished it", got)
	}
}
