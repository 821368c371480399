package gitlab

import (
	"context"
	"errors"
	"net/http"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/forge"
	"github.com/nixos-fireactions/nixos-fireactions/internal/double/gitlabdouble"
)

// taker is a runner of the env that took one job, as the guest's
// gitlab-runner does.
type taker struct {
	ref    forge.RunnerRef
	client *gitlabdouble.RunnerClient
	job    *gitlabdouble.JobPayload
}

// take registers a runner and lets it take the oldest job it may run;
// info is what its gitlab-runner announces (its features).
func (e *env) take(t *testing.T, name string, info map[string]any) taker {
	t.Helper()
	r := e.register(t, name, "linux")
	id, _ := strconv.ParseInt(r.ID, 10, 64)
	c := &gitlabdouble.RunnerClient{URL: e.srv.URL, Token: e.gl.Runners()[id].Token, SystemID: "s_" + name}
	job, err := c.RequestJob(context.Background(), info)
	if err != nil || job == nil {
		t.Fatalf("runner %s takes a job: %+v, %v", name, job, err)
	}
	return taker{ref: r.RunnerRef, client: c, job: job}
}

// retiredRunner is the start of most FailJob tests: a job, build, of
// project acme/app, taken by runner fa-h-1 announcing info, and the runner
// retired by the pool as its job started.
func retiredRunner(t *testing.T, info map[string]any) (*env, int64, taker) {
	t.Helper()
	e := newEnv(t, Scope{Kind: ScopeProject, Path: "acme/app"})
	job := e.gl.AddJob("acme/app", "build", []string{"linux"}, "true")
	a := e.take(t, "fa-h-1", info)
	if err := e.f.Retire(context.Background(), a.ref); err != nil {
		t.Fatal(err)
	}
	return e, job, a
}

func (e *env) status(id int64) string { return e.gl.Jobs()[id].Status }

// TestFailJobCancelsTheJobOfARetiredRunner: the pool retires a runner as
// soon as its job starts, and fails the job when the runner dies before
// the job ends. The job GitLab listed for the runner before its deletion
// is cancelled (GitLab's only end for a job from outside): its runner's
// next update is refused, and other jobs are left as they are.
func TestFailJobCancelsTheJobOfARetiredRunner(t *testing.T) {
	for _, reported := range []string{"", "own"} {
		t.Run("reported job "+reported, func(t *testing.T) {
			e := newEnv(t, Scope{Kind: ScopeProject, Path: "acme/app"})
			ctx := context.Background()
			first := e.gl.AddJob("acme/app", "first", []string{"linux"}, "true")
			other := e.gl.AddJob("acme/app", "other", []string{"linux"}, "true")
			a := e.take(t, "fa-h-1", nil)
			if a.job.ID != first {
				t.Fatalf("took job %d, want %d", a.job.ID, first)
			}
			if err := e.f.Retire(ctx, a.ref); err != nil {
				t.Fatal(err)
			}
			if n := len(e.gl.Runners()); n != 0 {
				t.Fatalf("%d runners left after the retirement", n)
			}
			job := ""
			if reported == "own" {
				job = strconv.FormatInt(first, 10)
			}
			if err := e.f.FailJob(ctx, a.ref, job, "runner exit code 2"); err != nil {
				t.Fatalf("FailJob: %v", err)
			}
			if st := e.status(first); st != "canceled" {
				t.Fatalf("the dead runner's job is %s, want canceled", st)
			}
			if st := e.status(other); st != "pending" {
				t.Fatalf("the other job is %s, want pending", st)
			}
			if _, err := a.client.UpdateJob(ctx, a.job.ID, a.job.Token, "running", 0, nil); !errors.Is(err, gitlabdouble.ErrForbidden) {
				t.Fatalf("update of the cancelled job with its job token: %v, want 403", err)
			}
		})
	}
}

// TestFailJobOfARunnerNotYetRetiredAsksGitLab: a runner that dies before
// the pool retired it (its job-started report still on its way) has its
// job found at GitLab now.
func TestFailJobOfARunnerNotYetRetiredAsksGitLab(t *testing.T) {
	e := newEnv(t, Scope{Kind: ScopeGroup, Path: "acme"})
	job := e.gl.AddJob("acme/sub/lib", "build", []string{"linux"}, "true")
	a := e.take(t, "fa-h-1", nil)
	if err := e.f.FailJob(context.Background(), a.ref, "", "the VM crashed"); err != nil {
		t.Fatalf("FailJob: %v", err)
	}
	if st := e.status(job); st != "canceled" {
		t.Fatalf("job is %s, want canceled", st)
	}
}

// TestFailJobNeverCancelsAJobTheGuestNamesThatIsNotItsRunners: the job id
// in the guest's report is the guest's word, and a guest may be hostile.
// A job GitLab does not list for the VM's runner (another runner's in the
// same project) is never cancelled; the runner's own job is.
func TestFailJobNeverCancelsAJobTheGuestNamesThatIsNotItsRunners(t *testing.T) {
	for _, retired := range []bool{true, false} {
		t.Run("retired="+strconv.FormatBool(retired), func(t *testing.T) {
			e := newEnv(t, Scope{Kind: ScopeInstance})
			ctx := context.Background()
			own := e.gl.AddJob("acme/app", "own", []string{"linux"}, "true")
			victim := e.gl.AddJob("acme/app", "victim", []string{"linux"}, "true")
			hostile := e.take(t, "fa-h-1", nil)
			honest := e.take(t, "fa-h-2", nil)
			if hostile.job.ID != own || honest.job.ID != victim {
				t.Fatalf("jobs taken: %d and %d", hostile.job.ID, honest.job.ID)
			}
			if retired {
				if err := e.f.Retire(ctx, hostile.ref); err != nil {
					t.Fatal(err)
				}
			}
			if err := e.f.FailJob(ctx, hostile.ref, strconv.FormatInt(victim, 10), "runner exit code 2"); err != nil {
				t.Fatalf("FailJob: %v", err)
			}
			if st := e.status(victim); st != "running" {
				t.Fatalf("the job the guest named, another runner's, is %s: want running, untouched", st)
			}
			if st := e.status(own); st != "canceled" {
				t.Fatalf("the guest's runner's own job is %s, want canceled", st)
			}
		})
	}
}

// TestFailJobLeavesAFinishedJobAsItIs: a runner that reported its job's
// result and then died: GitLab refuses to cancel a finished job (422),
// and FailJob answers ErrJobEnded.
func TestFailJobLeavesAFinishedJobAsItIs(t *testing.T) {
	e, job, a := retiredRunner(t, nil)
	ctx := context.Background()
	if code, err := a.client.UpdateJob(ctx, a.job.ID, a.job.Token, "success", 0, nil); err != nil || code != http.StatusOK {
		t.Fatalf("job's success: %d, %v", code, err)
	}
	if err := e.f.FailJob(ctx, a.ref, "", "runner exit code 1"); !errors.Is(err, forge.ErrJobEnded) {
		t.Fatalf("FailJob of a finished job: %v, want ErrJobEnded", err)
	}
	if st := e.status(job); st != "success" {
		t.Fatalf("job is %s, want success as it was", st)
	}
}

// TestFailJobForceCancelsAJobLeftCancelingByItsDeadRunner: a cancel
// leaves the job of a gitlab-runner that cancels gracefully canceling,
// for its runner to end, and the runner is dead: the job is
// force-cancelled.
func TestFailJobForceCancelsAJobLeftCancelingByItsDeadRunner(t *testing.T) {
	e, job, a := retiredRunner(t, map[string]any{"features": map[string]any{"cancel_gracefully": true}})
	ctx := context.Background()
	if err := e.f.FailJob(ctx, a.ref, "", "runner exit code 2"); err != nil {
		t.Fatalf("FailJob: %v", err)
	}
	if st := e.status(job); st != "canceled" {
		t.Fatalf("job is %s, want canceled", st)
	}
}

// TestFailJobOfARunnerRetiredByAnEarlierRunIsNotGuessed: what Retire
// learnt lives in memory; after a restart GitLab no longer says which job
// a deleted runner ran, so nothing is cancelled (ErrNoCredential), not
// even the job the guest names.
func TestFailJobOfARunnerRetiredByAnEarlierRunIsNotGuessed(t *testing.T) {
	e, job, a := retiredRunner(t, nil)
	ctx := context.Background()
	restarted, err := New(e.f.o)
	if err != nil {
		t.Fatal(err)
	}
	err = restarted.FailJob(ctx, a.ref, strconv.FormatInt(job, 10), "the VM crashed")
	if !errors.Is(err, forge.ErrNoCredential) {
		t.Fatalf("FailJob after a restart: %v, want ErrNoCredential", err)
	}
	if st := e.status(job); st != "running" {
		t.Fatalf("job is %s, want running (GitLab's own clean-up ends it)", st)
	}
}

// TestFailJobNeedsATokenThatMayCancel: GitLab lets a token cancel a job
// only with the api scope and at least the Developer role; a read-only or
// Reporter token is refused, and FailJob says so instead of claiming the
// job failed.
func TestFailJobNeedsATokenThatMayCancel(t *testing.T) {
	for name, g := range map[string]gitlabdouble.Grant{
		"read_api scope": {Scopes: []string{"read_api", "create_runner", "manage_runner"}, Role: gitlabdouble.Maintainer},
		"reporter":       {Scopes: []string{"api"}, Role: gitlabdouble.Reporter},
	} {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, Scope{Kind: ScopeProject, Path: "acme/app"})
			job := e.gl.AddJob("acme/app", "build", []string{"linux"}, "true")
			a := e.take(t, "fa-h-1", nil)
			const weak = "glpat-weak"
			e.gl.AddToken(weak, g)
			o := e.f.o
			o.Token = weak
			f, err := New(o)
			if err != nil {
				t.Fatal(err)
			}
			if err := f.FailJob(context.Background(), a.ref, "", "the VM crashed"); err == nil || errors.Is(err, forge.ErrJobEnded) {
				t.Fatalf("FailJob with a %s token: %v, want an error", name, err)
			}
			if st := e.status(job); st != "running" {
				t.Fatalf("job is %s, want running", st)
			}
		})
	}
}

// TestJobPatternFindsTheJobInGitLabRunnersLine: the guest agent reports
// the job id from gitlab-runner's line (logrus text, as gitlab-runner
// and the stand-in print it); the pool keeps it as the guest's claim.
func TestJobPatternFindsTheJobInGitLabRunnersLine(t *testing.T) {
	re := regexp.MustCompile(jobPattern)
	for line, want := range map[string]string{
		`Checking for jobs... received                        job=1234 repo_url=http://gitlab.invalid/acme/app.git runner=abcd1234`: "1234",
		`time="2026-12-05T10:00:00Z" level=info msg="Checking for jobs... received" job=77 repo_url=x runner=y`:                     "77",
		`Checking for jobs... nothing                         runner=abcd1234`:                                                      "",
	} {
		got := ""
		if m := re.FindStringSubmatch(line); m != nil {
			got = m[1]
		}
		if got != want {
			t.Errorf("%q: job %q, want %q", line, got, want)
		}
	}
	e := newEnv(t, Scope{Kind: ScopeProject, Path: "acme/app"})
	if r := e.register(t, "fa-h-1", "linux"); r.Guest.JobPattern != jobPattern {
		t.Fatalf("guest plan's job pattern %q", r.Guest.JobPattern)
	}
}

// TestRemoveForgetsTheJobsLearntAtRetirement: what Retire learnt is kept
// only until the pool removes the runner at the VM's end, so a host
// running jobs for months holds nothing of its past runners.
func TestRemoveForgetsTheJobsLearntAtRetirement(t *testing.T) {
	e, _, a := retiredRunner(t, nil)
	ctx := context.Background()
	e.f.mu.Lock()
	learnt := len(e.f.taken)
	e.f.mu.Unlock()
	if learnt != 1 {
		t.Fatalf("%d runners' jobs learnt at the retirement, want 1", learnt)
	}
	if err := e.f.Remove(ctx, a.ref); err != nil {
		t.Fatal(err)
	}
	e.f.mu.Lock()
	defer e.f.mu.Unlock()
	if len(e.f.taken) != 0 {
		t.Fatalf("jobs of %d removed runners still held", len(e.f.taken))
	}
}

// TestFailJobAfterARestartCancelsTheJobLearntBeforeRetirement: the pool
// asks the driver to learn the runner's job once it started (LearnJob)
// and keeps the memo in the VM's record; the runner is then retired
// (deleted: GitLab no longer says which runner ran the job). A driver
// made anew (the orchestrator restarted) cancels that job with the memo
// alone, and leaves other jobs as they are; without the memo it could
// not tell the job, and says so.
func TestFailJobAfterARestartCancelsTheJobLearntBeforeRetirement(t *testing.T) {
	e := newEnv(t, Scope{Kind: ScopeProject, Path: "acme/app"})
	ctx := context.Background()
	first := e.gl.AddJob("acme/app", "first", []string{"linux"}, "true")
	other := e.gl.AddJob("acme/app", "other", []string{"linux"}, "true")
	a := e.take(t, "fa-h-1", nil)
	memo, err := e.f.LearnJob(ctx, a.ref)
	if err != nil {
		t.Fatalf("LearnJob: %v", err)
	}
	a.ref.Memo = memo
	if err := e.f.Retire(ctx, a.ref); err != nil {
		t.Fatal(err)
	}
	if n := len(e.gl.Runners()); n != 0 {
		t.Fatalf("%d runners left after the retirement", n)
	}
	// What the VM's record keeps, as strings; the first driver is gone.
	id, name, kept := a.ref.ID, a.ref.Name, string(memo)
	after, err := New(Options{
		URL: e.srv.URL, Token: accessToken, Scope: Scope{Kind: ScopeProject, Path: "acme/app"},
		Pool: "linux", RequestTimeout: 2 * time.Second,
		Runner: RunnerSettings{Locked: true, AccessLevel: "not_protected", Executor: "shell"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := after.FailJob(ctx, forge.RunnerRef{ID: id, Name: name}, "", "runner exit code 2"); !errors.Is(err, forge.ErrNoCredential) {
		t.Fatalf("without its memo: %v, want forge.ErrNoCredential", err)
	}
	if err := after.FailJob(ctx, forge.RunnerRef{ID: id, Name: name, Memo: forge.RunnerMemo(kept)}, strconv.FormatInt(first, 10), "runner exit code 2"); err != nil {
		t.Fatalf("FailJob after a restart: %v", err)
	}
	if st := e.status(first); st != "canceled" {
		t.Fatalf("the dead runner's job is %s, want canceled", st)
	}
	if st := e.status(other); st != "pending" {
		t.Fatalf("the other job is %s, want pending", st)
	}
}

// TestLearnJobKeepsWhatWasLearnt: a memo that holds the runner's jobs
// is returned as it is (an adopted VM's, learnt by an earlier run): the
// runner may be deleted by now, and GitLab would answer 404.
func TestLearnJobKeepsWhatWasLearnt(t *testing.T) {
	e := newEnv(t, Scope{Kind: ScopeProject, Path: "acme/app"})
	ctx := context.Background()
	e.gl.AddJob("acme/app", "build", []string{"linux"}, "true")
	a := e.take(t, "fa-h-1", nil)
	memo, err := e.f.LearnJob(ctx, a.ref)
	if err != nil {
		t.Fatal(err)
	}
	if js, ok := jobsIn(memo); !ok || len(js) != 1 || js[0].id != a.job.ID {
		t.Fatalf("memo %q holds %v, want job %d", string(memo), js, a.job.ID)
	}
	a.ref.Memo = memo
	if err := e.f.Remove(ctx, a.ref); err != nil {
		t.Fatal(err)
	}
	again, err := e.f.LearnJob(ctx, a.ref)
	if err != nil || again != memo {
		t.Fatalf("LearnJob of a learnt runner: %q, %v; want its memo as it was", string(again), err)
	}
}

// TestLearnJobOfAnEmptyListingAsksAgain: GitLab lists no job for the
// runner yet (`{"jobs":[]}`): that is not learnt, so no memo is kept,
// the next LearnJob asks again and FailJob then cancels the job.
func TestLearnJobOfAnEmptyListingAsksAgain(t *testing.T) {
	e := newEnv(t, Scope{Kind: ScopeProject, Path: "acme/app"})
	ctx := context.Background()
	r := e.register(t, "fa-h-1", "linux")
	memo, err := e.f.LearnJob(ctx, r.RunnerRef)
	if err != nil {
		t.Fatal(err)
	}
	if memo != "" {
		t.Fatalf("memo of a runner GitLab lists no job for: %q, want none", string(memo))
	}
	if _, ok := jobsIn(`{"jobs":[]}`); ok {
		t.Fatal(`jobsIn({"jobs":[]}) counts as learnt`)
	}
	// Its job starts now.
	job := e.gl.AddJob("acme/app", "build", []string{"linux"}, "true")
	id, _ := strconv.ParseInt(r.ID, 10, 64)
	c := &gitlabdouble.RunnerClient{URL: e.srv.URL, Token: e.gl.Runners()[id].Token, SystemID: "s_fa-h-1"}
	if j, err := c.RequestJob(ctx, nil); err != nil || j == nil || j.ID != job {
		t.Fatalf("runner takes a job: %+v, %v", j, err)
	}
	ref := r.RunnerRef
	ref.Memo = memo
	memo, err = e.f.LearnJob(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	if js, ok := jobsIn(memo); !ok || len(js) != 1 || js[0].id != job {
		t.Fatalf("memo %q holds %v, want job %d", string(memo), js, job)
	}
	ref.Memo = memo
	if err := e.f.FailJob(ctx, ref, "", "runner exit code 2"); err != nil {
		t.Fatalf("FailJob: %v", err)
	}
	if st := e.status(job); st != "canceled" {
		t.Fatalf("job is %s, want canceled", st)
	}
}
