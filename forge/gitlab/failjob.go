package gitlab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"

	gl "gitlab.com/gitlab-org/api/client-go/v2"

	"github.com/nixos-fireactions/nixos-fireactions/forge"
)

var _ forge.JobFailer = (*Forge)(nil)

// jobPattern finds the job id in gitlab-runner's line that says it took
// a job: `Checking for jobs... received   job=42 repo_url=…` (its
// runner log format; `msg="…received" job=42` in logrus text). The host
// takes it as the guest's claim only: FailJob acts on the jobs GitLab
// lists for the runner.
const jobPattern = `Checking for jobs\.\.\. received"?\s+job=(\d+)\s`

// runnerJob is a job GitLab lists for a runner, with its project (the
// Jobs API addresses a job by project).
type runnerJob struct{ id, project int64 }

// maxRunnerJobs bounds the jobs kept of one runner: a runner takes one
// job (--max-builds 1); more means its token was used by someone else
// before its retirement, and those jobs ran in the same VM too.
const maxRunnerJobs = 20

// runnerJobs is GET /runners/:id/jobs: the jobs GitLab says the runner
// took, newest first, any status. It needs a token (api or read_api
// scope) of an administrator (instance runners) or of a Maintainer of
// the runner's group or project, and GitLab answers 404 once the runner
// is deleted: its jobs' runner is nulled then, so which runner ran a job
// cannot be asked afterwards.
func (f *Forge) runnerJobs(ctx context.Context, runner int64) ([]runnerJob, error) {
	js, _, err := f.api.Runners.ListRunnerJobs(runner, &gl.ListRunnerJobsOptions{
		ListOptions: gl.ListOptions{Page: 1, PerPage: maxRunnerJobs},
		OrderBy:     gl.Ptr("id"), Sort: gl.Ptr("desc"),
	}, gl.WithContext(ctx))
	if err != nil {
		return nil, err
	}
	out := make([]runnerJob, 0, len(js))
	for _, j := range js {
		if j.Project == nil || j.Project.ID == 0 || j.ID == 0 {
			continue
		}
		out = append(out, runnerJob{id: j.ID, project: j.Project.ID})
	}
	return out, nil
}

var _ forge.JobLearner = (*Forge)(nil)

// jobsMemo is the runner memo LearnJob returns: the jobs GitLab listed
// for the runner while it still did (see forge.RunnerMemo). Job and
// project ids only: nothing in it is a secret.
type jobsMemo struct {
	Jobs []memoJob `json:"jobs"`
}

type memoJob struct {
	ID      int64 `json:"id"`
	Project int64 `json:"project"`
}

// encodeJobs is the memo of a runner whose jobs are js.
func encodeJobs(js []runnerJob) (forge.RunnerMemo, error) {
	m := jobsMemo{Jobs: make([]memoJob, 0, len(js))}
	for _, j := range js {
		m.Jobs = append(m.Jobs, memoJob{ID: j.id, Project: j.project})
	}
	b, err := json.Marshal(m)
	if err != nil {
		return "", fmt.Errorf("gitlab: encode runner memo: %w", err)
	}
	return forge.RunnerMemo(b), nil
}

// jobsIn is the jobs a runner's memo holds; false when it holds none
// learnt (empty: its job not learnt, or a record of an older version).
// An empty listing is not learnt: GitLab may list the job a moment
// later, and a memo of no job would answer FailJob "no job" for good.
func jobsIn(m forge.RunnerMemo) ([]runnerJob, bool) {
	var v jobsMemo
	if m == "" || json.Unmarshal([]byte(m), &v) != nil || len(v.Jobs) == 0 {
		return nil, false
	}
	out := make([]runnerJob, 0, min(len(v.Jobs), maxRunnerJobs))
	for _, j := range v.Jobs {
		if j.ID > 0 && j.Project > 0 && len(out) < maxRunnerJobs {
			out = append(out, runnerJob{id: j.ID, project: j.Project})
		}
	}
	return out, true
}

// LearnJob implements forge.JobLearner: the jobs GitLab lists for the
// runner now (GET /runners/:id/jobs), which FailJob cancels if the runner
// dies before they end, in the runner's memo. The pool calls it once the
// runner's job started, before Retire deletes the runner (GitLab then
// answers 404 for its jobs), and keeps the memo in the VM's record, so a
// restarted orchestrator that adopts the VM can still cancel the job.
func (f *Forge) LearnJob(ctx context.Context, r forge.RunnerRef) (forge.RunnerMemo, error) {
	runner, err := strconv.ParseInt(r.ID, 10, 64)
	if err != nil {
		return r.Memo, fmt.Errorf("gitlab: learn the job of runner %s: bad runner id %q", r.Name, r.ID)
	}
	if _, ok := jobsIn(r.Memo); ok {
		return r.Memo, nil // learnt already (an adopted VM's, by an earlier run)
	}
	js, err := f.learnRunnerJobs(ctx, runner)
	if err != nil {
		return r.Memo, fmt.Errorf("gitlab: list the jobs of runner %s: %w", r.Name, err)
	}
	if len(js) == 0 {
		return r.Memo, nil // nothing learnt: the next call asks again
	}
	return encodeJobs(js)
}

// learnJobs asks GitLab for the runner's jobs and keeps them for
// FailJob. It runs before the runner is deleted (Retire): afterwards
// GitLab no longer says which runner ran a job.
func (f *Forge) learnJobs(ctx context.Context, runner int64, name string) {
	_, err := f.learnRunnerJobs(ctx, runner)
	switch {
	case err == nil:
	case statusOf(err) == http.StatusNotFound:
		// Deleted already (an earlier run retired it): nothing to learn.
	default:
		f.log.Warn("gitlab: list the runner's jobs before retiring it: its job cannot be cancelled if its runner dies", "runner", name, "runner_id", runner, "err", err)
	}
}

// learnRun is the job listings of one runner in flight, and whether the
// runner was removed (Remove) while one was.
type learnRun struct {
	n       int
	removed bool
}

// learnRunnerJobs asks GitLab for the runner's jobs and keeps them for
// FailJob (taken), unless the runner was removed while GitLab answered:
// Remove forgets what was learnt of a runner, and an answer stored after
// it would be held for good. The mark Remove leaves lives only while a
// listing of that runner is in flight, so neither taken nor learning
// outgrows the runners the pool holds.
func (f *Forge) learnRunnerJobs(ctx context.Context, runner int64) ([]runnerJob, error) {
	f.mu.Lock()
	l := f.learning[runner]
	if l == nil {
		l = &learnRun{}
		f.learning[runner] = l
	}
	l.n++
	f.mu.Unlock()
	js, err := f.runnerJobs(ctx, runner)
	f.mu.Lock()
	if err == nil && !l.removed && len(js) > 0 {
		f.taken[runner] = js
	}
	if l.n--; l.n == 0 {
		delete(f.learning, runner)
	}
	f.mu.Unlock()
	if err == nil {
		f.tookJobs(js)
	}
	return js, err
}

// FailJob implements forge.JobFailer. Cancelled is the only end GitLab's
// API gives a job from outside (POST /projects/:id/jobs/:job_id/cancel,
// with the scope's access token: api scope, at least the Developer role
// in the job's project, and for a job of a protected branch a role that
// may push or merge to it, Maintainer for the default branch): a job
// cannot be set failed, nor its log added to, without the job's own
// token, which the host never holds. So the job
// ends canceled at GitLab, and reason stays in the host's log. A job
// whose runner cancels gracefully turns canceling and waits for a runner
// that is dead: it is force-cancelled (force=true, Maintainer role,
// GitLab 17.11 or later).
//
// The jobs cancelled are those GitLab lists for r (GET /runners/:id/jobs,
// learnt before the runner's deletion: in r.Memo (LearnJob), which
// outlives a restart, or at Retire; or asked now if it was not retired
// yet), never a job only the guest named: job, the guest's report, is
// checked against that list, and a job GitLab does not list for r is
// left alone (a hostile guest could name any job). A runner retired
// before its jobs were learnt (its listing failed, or a record written
// before memos were kept) is answered ErrNoCredential; a job that had
// ended already is left as it is and answered ErrJobEnded.
func (f *Forge) FailJob(ctx context.Context, r forge.RunnerRef, job, reason string) error {
	runner, err := strconv.ParseInt(r.ID, 10, 64)
	if err != nil {
		return fmt.Errorf("gitlab: fail the job of runner %s: bad runner id %q", r.Name, r.ID)
	}
	jobs, err := f.jobsOf(ctx, runner, r)
	if err != nil {
		return err
	}
	if job != "" && !slices.ContainsFunc(jobs, func(j runnerJob) bool { return strconv.FormatInt(j.id, 10) == job }) {
		f.log.Warn("gitlab: the guest reported a job GitLab does not list for its runner: not cancelled", "runner", r.Name, "runner_id", runner, "reported_job", job)
	}
	if len(jobs) == 0 {
		return fmt.Errorf("gitlab: fail the job of runner %s: GitLab lists no job for it", r.Name)
	}
	var errs []error
	cancelled := 0
	for _, j := range jobs {
		err := f.cancel(ctx, j)
		switch {
		case err == nil:
			cancelled++
			f.log.Info("gitlab: job cancelled: its runner died before it ended", "runner", r.Name, "job", j.id, "project_id", j.project, "reason", reason)
		case !errors.Is(err, forge.ErrJobEnded):
			errs = append(errs, fmt.Errorf("job %d: %w", j.id, err))
		}
	}
	switch {
	case len(errs) > 0:
		return fmt.Errorf("gitlab: cancel the jobs of runner %s: %w", r.Name, errors.Join(errs...))
	case cancelled == 0:
		return fmt.Errorf("gitlab: jobs of runner %s: %w", r.Name, forge.ErrJobEnded)
	}
	return nil
}

// jobsOf returns the jobs GitLab listed for the runner: those in its
// memo or learnt at its retirement, or, for a runner not retired yet,
// GitLab's answer now.
func (f *Forge) jobsOf(ctx context.Context, runner int64, r forge.RunnerRef) ([]runnerJob, error) {
	name := r.Name
	if jobs, ok := jobsIn(r.Memo); ok {
		return jobs, nil
	}
	f.mu.Lock()
	jobs, ok := f.taken[runner]
	f.mu.Unlock()
	if ok {
		return jobs, nil
	}
	jobs, err := f.runnerJobs(ctx, runner)
	if statusOf(err) == http.StatusNotFound {
		// Retired meanwhile? Its retirement learnt the jobs first.
		f.mu.Lock()
		jobs, ok = f.taken[runner]
		f.mu.Unlock()
		if ok {
			return jobs, nil
		}
		return nil, fmt.Errorf("gitlab: fail the job of runner %s: it was retired before its jobs were learnt (its job listing failed, or its record predates runner memos): %w", name, forge.ErrNoCredential)
	}
	if err != nil {
		return nil, fmt.Errorf("gitlab: list the jobs of runner %s: %w", name, err)
	}
	return jobs, nil
}

// cancel ends one job canceled, or answers ErrJobEnded for a job that
// had ended. GitLab answers 422 to a cancel of a job that is not
// cancelable (finished, or canceling already), so the job read then
// decides: a job canceled already was ended by someone else (a user, or
// GitLab), not by this cancel, and is answered ErrJobEnded like a job
// that succeeded or failed; one left canceling (its runner is dead) is
// force-cancelled. Only a cancel of ours that ended the job counts as
// done. (Older GitLab versions answer 201 with the job as it was: a job
// canceled before then reads as one this cancel ended.)
func (f *Forge) cancel(ctx context.Context, j runnerJob) error {
	got, _, err := f.api.Jobs.CancelJob(j.project, j.id, gl.WithContext(ctx))
	refused := statusOf(err) == http.StatusUnprocessableEntity
	if refused {
		got, _, err = f.api.Jobs.GetJob(j.project, j.id, gl.WithContext(ctx))
		if err != nil {
			return fmt.Errorf("read it after a refused cancel: %w", err)
		}
	} else if err != nil {
		return fmt.Errorf("cancel: %w", err)
	}
	switch got.Status {
	case "canceled":
		if refused {
			return forge.ErrJobEnded // cancelled before ours
		}
		return nil
	case "canceling":
		// Its runner would end it, and is dead.
		//nolint:staticcheck // CancelJobWithOptions is client-go's only way to send force.
		got, _, err = f.api.Jobs.CancelJobWithOptions(j.project, j.id, &gl.CancelJobOptions{Force: gl.Ptr(true)}, gl.WithContext(ctx))
		if err != nil {
			return fmt.Errorf("force-cancel a job left canceling by its dead runner: %w", err)
		}
		if got.Status != "canceled" {
			return fmt.Errorf("force-cancel: the job is %s", got.Status)
		}
		return nil
	case "success", "failed", "skipped", "manual":
		return forge.ErrJobEnded
	}
	return fmt.Errorf("cancel: the job is %s", got.Status)
}

// forgetJobs drops what was learnt of a runner's jobs, once it is removed
// for good, and what a listing of them still in flight would learn.
func (f *Forge) forgetJobs(runner int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.taken, runner)
	if l := f.learning[runner]; l != nil {
		l.removed = true
	}
}
