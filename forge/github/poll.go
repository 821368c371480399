package github

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	gh "github.com/google/go-github/v93/github"

	"github.com/nixos-fireactions/nixos-fireactions/forge"
)

// roundTimeout bounds a background reconciler round.
const roundTimeout = 2 * time.Minute

// QueuedJobs implements forge.Forge: the queued jobs of the pool's scope
// as webhooks and polls report them. When a reconciler round is due it
// starts one: the very first in line, so that start-up sees the queue;
// later ones in the background, so a slow GitHub never holds up a
// webhook's job. Until a round has succeeded the queue is unknown without
// webhooks: that is an error.
func (p *Pool) QueuedJobs(ctx context.Context) ([]forge.Job, error) {
	if p.ss != nil {
		return p.ss.queuedJobs(), nil
	}
	now := time.Now()
	p.stateMu.Lock()
	due, first := !now.Before(p.nextRound), !p.begun
	if due {
		p.nextRound, p.begun = now.Add(p.c.interval), true
	}
	p.stateMu.Unlock()
	switch {
	case due && first:
		_ = p.Reconcile(ctx)
	case due:
		go func() {
			if !p.round.TryLock() {
				return // the previous round still runs
			}
			p.round.Unlock()
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), roundTimeout)
			defer cancel()
			_ = p.Reconcile(rctx)
		}()
	}
	p.stateMu.Lock()
	polled, lastErr := p.polled, p.lastErr
	p.stateMu.Unlock()
	if !polled && p.c.secret == "" {
		return nil, fmt.Errorf("github: queue of %s unknown: no poll has succeeded yet: %w", p.scope, lastErr)
	}
	return p.c.demand.queuedJobs(func(j *jobState) bool { return p.covers(j.repo, j.enterprise) }, p.c.jobOf), nil
}

// Reconcile is one reconciler round: it lists the queued and in-progress
// workflow runs of the pool's repositories and their jobs, then asks
// GitHub about each queued job no source confirmed (a missed delivery of
// its start or end), and about each job of an unpolled repository waiting
// for approval (a missed or overtaken approval), so the queue heals from
// lost and out-of-order webhooks.
func (p *Pool) Reconcile(ctx context.Context) error {
	p.round.Lock()
	defer p.round.Unlock()
	start := p.c.now()
	var errs []error
	failed := map[string]bool{}
	for _, repo := range p.repos {
		if err := p.pollRepo(ctx, repo); err != nil {
			errs = append(errs, err)
			failed[strings.ToLower(repo)] = true
		}
	}
	polled := func(repo string) bool {
		for _, r := range p.repos {
			if strings.EqualFold(r, repo) {
				return true
			}
		}
		return false
	}
	// Polled repositories: a queued job the poll did not see has moved
	// on. Others (webhooks only): a queued job quiet for a period.
	check := p.c.demand.unconfirmed(statusQueued, func(j *jobState) bool {
		return p.covers(j.repo, j.enterprise) && polled(j.repo) && !failed[strings.ToLower(j.repo)]
	}, start, verifyBatchLimit)
	unpolled := func(j *jobState) bool { return p.covers(j.repo, j.enterprise) && !polled(j.repo) }
	check = append(check, p.c.demand.unconfirmed(statusQueued, unpolled, start.Add(-p.c.interval), verifyBatchLimit)...)
	// A job held for approval whose approval (queued again) was lost or
	// overtaken by a late "waiting": a poll of its repository finds it
	// once its run is queued; without one, it is asked about.
	// Such a job can wait for days: each read that finds it still
	// waiting doubles the wait before the next (demand.backOff).
	due := func(j *jobState) bool { return unpolled(j) && !j.checkAfter.After(start) }
	check = append(check, p.c.demand.unconfirmed(statusWaiting, due, start.Add(-p.c.interval), verifyBatchLimit)...)
	for _, j := range check {
		if err := p.verify(ctx, j); err != nil {
			errs = append(errs, err)
		}
		if j.status == statusWaiting {
			p.c.demand.backOff(j.id, p.c.now(), p.c.interval)
		}
	}
	err := errors.Join(errs...)
	p.stateMu.Lock()
	p.lastErr = err
	if err == nil {
		p.polled = true
	}
	p.stateMu.Unlock()
	if err != nil {
		p.log.Warn("github reconciler round failed", "err", err)
	}
	return err
}

// pollRepo records the jobs of the repository's queued and in-progress
// runs (an in-progress run may still have queued jobs).
func (p *Pool) pollRepo(ctx context.Context, repo string) error {
	owner, name, _ := strings.Cut(repo, "/")
	for _, st := range []string{"queued", "in_progress"} {
		opts := &gh.ListWorkflowRunsOptions{Status: st, ListOptions: gh.ListOptions{PerPage: 100}}
		for page := 0; page < maxPages; page++ {
			runs, resp, err := p.gh.Actions.ListRepositoryWorkflowRuns(ctx, owner, name, opts)
			if err != nil {
				return fmt.Errorf("github: list %s workflow runs of %s: %w", st, repo, err)
			}
			for _, r := range runs.WorkflowRuns {
				if err := p.pollRun(ctx, owner, name, r.GetID()); err != nil {
					return err
				}
			}
			if resp.NextPage == 0 {
				break
			}
			opts.Page = resp.NextPage
		}
	}
	return nil
}

func (p *Pool) pollRun(ctx context.Context, owner, name string, runID int64) error {
	opts := &gh.ListWorkflowJobsOptions{Filter: "latest", ListOptions: gh.ListOptions{PerPage: 100}}
	for page := 0; page < maxPages; page++ {
		jobs, resp, err := p.gh.Actions.ListWorkflowJobs(ctx, owner, name, runID, opts)
		if err != nil {
			return fmt.Errorf("github: list jobs of run %d of %s/%s: %w", runID, owner, name, err)
		}
		for _, j := range jobs.Jobs {
			p.c.demand.observe(jobFromAPI(owner+"/"+name, j), p.c.now())
		}
		if resp.NextPage == 0 {
			return nil
		}
		opts.Page = resp.NextPage
	}
	return nil
}

func jobFromAPI(repo string, j *gh.WorkflowJob) jobState {
	return jobState{
		id: j.GetID(), repo: repo, labels: j.Labels, status: parseStatus(j.GetStatus()),
		queuedAt: j.GetCreatedAt().Time, runner: j.GetRunnerName(),
	}
}

// verify asks GitHub about one queued or waiting job; a job that is gone
// is done.
func (p *Pool) verify(ctx context.Context, j jobState) error {
	owner, name, _ := strings.Cut(j.repo, "/")
	got, _, err := p.gh.Actions.GetWorkflowJobByID(ctx, owner, name, j.id)
	if isStatus(err, http.StatusNotFound) {
		j.status = statusCompleted
		p.c.demand.observe(j, p.c.now())
		return nil
	}
	if err != nil {
		return fmt.Errorf("github: get job %d of %s: %w", j.id, j.repo, err)
	}
	p.c.demand.observe(jobFromAPI(j.repo, got), p.c.now())
	return nil
}

// isStatus reports whether err is GitHub answering with code.
func isStatus(err error, code int) bool {
	var er *gh.ErrorResponse
	return errors.As(err, &er) && er.Response != nil && er.Response.StatusCode == code
}
