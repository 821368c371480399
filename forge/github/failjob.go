package github

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	gh "github.com/google/go-github/v93/github"

	"github.com/nixos-fireactions/nixos-fireactions/forge"
)

var _ forge.JobFailer = (*Pool)(nil)

// failJobTimeout bounds FailJob's calls, the look-up of the runner's job
// included.
const failJobTimeout = 30 * time.Second

// What Options.CancelRuns may say.
const (
	cancelForce = "force"  // cancel, then force-cancel if the job is the run's only one left running
	cancelOnly  = "cancel" // cancel; GitHub ends the job after its cancellation timeout
	cancelOff   = "off"    // fail nothing: GitHub's own clean-up fails the job
)

// FailJob implements forge.JobFailer. GitHub has no call that fails one
// job, and a just-in-time runner's own credential speaks only the runner
// protocol, so the driver ends the job the way a person with write access
// would: it cancels the job's workflow run with the scope's credential
// (an App installation needs the actions:write permission, a PAT
// (classic) the repo scope).
//
// The job is never taken from the guest (job, what the guest reported,
// is not used): it is the job GitHub says runner r took, from the
// workflow_job deliveries and polls the driver has seen, else, while
// GitHub says the runner is busy, from listing the in-progress runs of
// the pool's repositories; GitHub is then asked for that job, and only a
// job whose runner is r, and which has not completed, has its run
// cancelled. A job that completed is answered with forge.ErrJobEnded, as
// is a runner GitHub says runs no job (not busy, or gone: GitHub frees a
// runner, and deletes a just-in-time one, once its job completes).
//
// What users see: the run is cancelled, not just the job: its other jobs
// are cancelled too (queued ones at once; running ones as GitHub cancels
// any run: jobs and steps with if: always() or cancelled() still run),
// and the run's conclusion is "cancelled", not "failure". The dead
// runner cannot acknowledge the cancel, so GitHub would leave its job
// running until its 5-minute cancellation timeout: with CancelRuns
// "force" (the default), when after the cancel the dead runner's job is
// the only job of the run that has not completed, the run is
// force-cancelled, which ends that job at once; while any other job of
// the run still runs (an if: always() clean-up on another runner) the
// run is only cancelled, so that nothing the guest does can end other
// runners' jobs. With "cancel" the run is only cancelled. Only
// cancelled, the dead runner's job, and its runner's busy state, last
// until GitHub's timeout: removing the runner meanwhile fails (422) and
// is retried. With "off" FailJob answers errors.ErrUnsupported and
// GitHub fails the job only when it notices the runner lost, minutes
// later (the run's other jobs go on). The reason stays in the host's
// log: GitHub has no place for it in the job's log.
func (p *Pool) FailJob(ctx context.Context, r forge.RunnerRef, _, reason string) error {
	if p.c.cancel == cancelOff {
		return fmt.Errorf("github: fail the job of runner %s: cancel_runs is off: %w", r.Name, errors.ErrUnsupported)
	}
	runnerID, err := strconv.ParseInt(r.ID, 10, 64)
	if err != nil || runnerID <= 0 {
		return fmt.Errorf("github: fail the job of runner %s: runner id %q is not a number", r.Name, r.ID)
	}
	ctx, cancel := context.WithTimeout(ctx, failJobTimeout)
	defer cancel()
	j, err := p.jobOfRunner(ctx, r, runnerID)
	if err != nil {
		return err
	}
	log := p.log.With("runner", r.Name, "job", j.id, "repo", j.repo)
	owner, repo, _ := strings.Cut(j.repo, "/")
	got, err := p.confirmJob(ctx, owner, repo, j.id, r, runnerID)
	if err != nil {
		return err
	}
	runID := got.GetRunID()
	log = log.With("run", runID)
	if got.GetStatus() == "completed" {
		return fmt.Errorf("github: job %d of runner %s (%s): %w", j.id, r.Name, got.GetConclusion(), forge.ErrJobEnded)
	}
	_, err = p.gh.Actions.CancelWorkflowRunByID(ctx, owner, repo, runID)
	var accepted *gh.AcceptedError
	conflict := isStatus(err, http.StatusConflict)
	switch {
	case err == nil || errors.As(err, &accepted):
	case conflict:
		// Cannot be cancelled: it completed meanwhile, or it is being
		// cancelled already; the job's state says which.
	default:
		return fmt.Errorf("github: cancel run %d of %s (job %d of runner %s): %w", runID, j.repo, j.id, r.Name, err)
	}
	now, err := p.confirmJob(ctx, owner, repo, j.id, r, runnerID)
	if err != nil {
		return err
	}
	if now.GetStatus() == "completed" {
		if conflict { // it ended on its own before the cancel
			return fmt.Errorf("github: job %d of runner %s (%s): %w", j.id, r.Name, now.GetConclusion(), forge.ErrJobEnded)
		}
		log.Warn("job's workflow run cancelled: its runner died", "reason", reason)
		return nil
	}
	if p.c.cancel == cancelOnly {
		log.Warn("job's workflow run cancelled: its runner died; GitHub ends the job when its cancellation timeout does (cancel_runs: cancel)",
			"reason", reason)
		return nil
	}
	// The runner is dead and cannot acknowledge the cancel. Force-cancel
	// ends every job of the run still running, so only when no job but
	// the dead runner's is: the guest alone must not end jobs of other
	// runners (if: always() clean-ups).
	others, err := p.unfinishedJobs(ctx, owner, repo, runID, j.id)
	if err != nil {
		return fmt.Errorf("github: run %d of %s cancelled (job %d of runner %s); list its jobs to decide on a force-cancel: %w",
			runID, j.repo, j.id, r.Name, err)
	}
	if others > 0 {
		log.Warn("job's workflow run cancelled: its runner died; not force-cancelled while other jobs of the run run on: GitHub ends the job, and frees its runner, when its cancellation timeout does",
			"reason", reason, "unfinished_jobs", others)
		return nil
	}
	if err := p.forceCancel(ctx, owner, repo, runID); err != nil {
		if isStatus(err, http.StatusConflict) {
			log.Warn("job's workflow run cancelled: its runner died", "reason", reason)
			return nil // completed between the two calls: by our cancel
		}
		return fmt.Errorf("github: force-cancel run %d of %s (job %d of runner %s): %w", runID, j.repo, j.id, r.Name, err)
	}
	log.Warn("job's workflow run force-cancelled: its runner died and could not stop the job", "reason", reason)
	return nil
}

// jobOfRunner is the job GitHub said runner r took: from what deliveries
// and polls reported, else, when GitHub says the runner is busy, from the
// in-progress runs of the pool's repositories. A runner GitHub says runs
// no job (not busy, or gone) is answered with forge.ErrJobEnded.
func (p *Pool) jobOfRunner(ctx context.Context, r forge.RunnerRef, runnerID int64) (jobState, error) {
	if j, ok := p.c.demand.jobOfRunner(r.Name, p.covers); ok {
		return j, nil
	}
	// No delivery named it (polling only, deliveries lost, or a runner
	// that took no job): GitHub's word on the runner settles whether a
	// job of it still runs before any scan.
	busy, err := p.runnerBusy(ctx, runnerID)
	switch {
	case isStatus(err, http.StatusNotFound):
		return jobState{}, fmt.Errorf("github: runner %s is gone at GitHub (a just-in-time runner is deleted once its job completes): %w",
			r.Name, forge.ErrJobEnded)
	case err != nil:
		return jobState{}, fmt.Errorf("github: find the job of runner %s: read the runner: %w", r.Name, err)
	case !busy:
		return jobState{}, fmt.Errorf("github: runner %s runs no job at GitHub (not busy): %w", r.Name, forge.ErrJobEnded)
	}
	for _, repo := range p.repos {
		if err := p.pollInProgress(ctx, repo); err != nil {
			return jobState{}, fmt.Errorf("github: find the job of runner %s: %w", r.Name, err)
		}
		if j, ok := p.c.demand.jobOfRunner(r.Name, p.covers); ok {
			return j, nil
		}
	}
	if len(p.repos) == 0 {
		return jobState{}, fmt.Errorf("github: find the job of runner %s: GitHub says it is busy, but no delivery named its job and the pool lists no repos to look in",
			r.Name)
	}
	return jobState{}, fmt.Errorf("github: find the job of runner %s: GitHub says it is busy, but no delivery named its job and no in-progress run of %s has it",
		r.Name, strings.Join(p.repos, ", "))
}

// runnerBusy reads the runner at GitHub: whether it runs a job. A runner
// that is gone is GitHub's 404.
func (p *Pool) runnerBusy(ctx context.Context, id int64) (bool, error) {
	rn := new(gh.Runner)
	if _, err := p.call(ctx, http.MethodGet, p.runnersPath(strconv.FormatInt(id, 10)), nil, rn); err != nil {
		return false, err
	}
	return rn.GetBusy(), nil
}

// unfinishedJobs counts the jobs of the run's latest attempt, job aside,
// that have not completed.
func (p *Pool) unfinishedJobs(ctx context.Context, owner, repo string, runID, job int64) (int, error) {
	n := 0
	opts := &gh.ListWorkflowJobsOptions{Filter: "latest", ListOptions: gh.ListOptions{PerPage: 100}}
	for page := 0; page < maxPages; page++ {
		jobs, resp, err := p.gh.Actions.ListWorkflowJobs(ctx, owner, repo, runID, opts)
		if err != nil {
			return 0, err
		}
		for _, j := range jobs.Jobs {
			if j.GetID() != job && j.GetStatus() != "completed" {
				n++
			}
		}
		if resp.NextPage == 0 {
			break
		}
		opts.Page = resp.NextPage
	}
	return n, nil
}

// pollInProgress records the jobs of the repository's in-progress runs.
func (p *Pool) pollInProgress(ctx context.Context, repo string) error {
	owner, name, _ := strings.Cut(repo, "/")
	opts := &gh.ListWorkflowRunsOptions{Status: "in_progress", ListOptions: gh.ListOptions{PerPage: 100}}
	for page := 0; page < maxPages; page++ {
		runs, resp, err := p.gh.Actions.ListRepositoryWorkflowRuns(ctx, owner, name, opts)
		if err != nil {
			return fmt.Errorf("list in-progress workflow runs of %s: %w", repo, err)
		}
		for _, run := range runs.WorkflowRuns {
			if err := p.pollRun(ctx, owner, name, run.GetID()); err != nil {
				return err
			}
		}
		if resp.NextPage == 0 {
			return nil
		}
		opts.Page = resp.NextPage
	}
	return nil
}

// confirmJob reads the job from GitHub and checks that runner r ran it.
func (p *Pool) confirmJob(ctx context.Context, owner, repo string, id int64, r forge.RunnerRef, runnerID int64) (*gh.WorkflowJob, error) {
	got, _, err := p.gh.Actions.GetWorkflowJobByID(ctx, owner, repo, id)
	if err != nil {
		return nil, fmt.Errorf("github: read job %d of %s/%s (runner %s): %w", id, owner, repo, r.Name, err)
	}
	if got.GetRunnerName() != r.Name || got.RunnerID != nil && got.GetRunnerID() != runnerID {
		return nil, fmt.Errorf("github: job %d of %s/%s ran on runner %q (%d), not on %s (%d): not cancelled",
			id, owner, repo, got.GetRunnerName(), got.GetRunnerID(), r.Name, runnerID)
	}
	if got.GetRunID() == 0 {
		return nil, fmt.Errorf("github: job %d of %s/%s: the answer names no workflow run", id, owner, repo)
	}
	return got, nil
}

// forceCancel force-cancels a workflow run (go-github lacks the call).
func (p *Pool) forceCancel(ctx context.Context, owner, repo string, runID int64) error {
	u := fmt.Sprintf("repos/%s/%s/actions/runs/%d/force-cancel", url.PathEscape(owner), url.PathEscape(repo), runID)
	req, err := p.gh.NewRequest(ctx, http.MethodPost, u, nil)
	if err != nil {
		return err
	}
	_, err = p.gh.Do(req, nil)
	var accepted *gh.AcceptedError
	if errors.As(err, &accepted) {
		return nil
	}
	return err
}
