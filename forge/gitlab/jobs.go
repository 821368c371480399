package gitlab

import (
	"context"
	"fmt"
	"strconv"
	"time"

	gl "gitlab.com/gitlab-org/api/client-go/v2"

	"github.com/nixos-fireactions/nixos-fireactions/forge"
)

// GitLab has no API listing the pending jobs of a group or of the whole
// instance: a group or instance scope polls its most recently active
// projects one by one, at most every widePollEvery, and relies on Job
// Hook webhooks for the others.
const (
	projectListTTL = 5 * time.Minute
	widePollEvery  = 10 * time.Second
	// hookTTL is how long a pending job known only from a webhook counts
	// as demand when no poll covers its project.
	hookTTL = 10 * time.Minute
)

// pollState is what polling a group or instance learnt.
type pollState struct {
	projects   []projectRef
	projectsAt time.Time
	jobs       []forge.Job
	covered    map[int64]bool // projects the last poll listed
	at         time.Time      // when the last poll started
}

type projectRef struct {
	id   int64
	path string
}

// hookedJob is a pending job a webhook announced.
type hookedJob struct {
	job     forge.Job
	project int64
	at      time.Time
}

// QueuedJobs implements forge.Forge: the scope's pending jobs from the
// API, plus pending jobs webhooks announced in projects the poll did not
// cover (or announced after it).
func (f *Forge) QueuedJobs(ctx context.Context) ([]forge.Job, error) {
	jobs, covered, at, err := f.poll(ctx)
	if err != nil {
		return nil, err
	}
	return f.mergeHooked(jobs, covered, at), nil
}

// poll lists pending jobs: the project's, or the polled projects' of a
// group or instance (cached for widePollEvery).
func (f *Forge) poll(ctx context.Context) ([]forge.Job, map[int64]bool, time.Time, error) {
	start := f.o.Now()
	if f.o.Scope.Kind == ScopeProject {
		id, err := f.scopeRef(ctx)
		if err != nil {
			return nil, nil, start, err
		}
		js, err := f.projectPending(ctx, projectRef{id: id, path: f.o.Scope.Path})
		return js, map[int64]bool{id: true}, start, err
	}
	f.mu.Lock()
	if p := f.polled; !p.at.IsZero() && start.Sub(p.at) < widePollEvery {
		f.mu.Unlock()
		return append([]forge.Job(nil), p.jobs...), p.covered, p.at, nil
	}
	f.mu.Unlock()
	projects, err := f.pollProjects(ctx)
	if err != nil {
		return nil, nil, start, err
	}
	var all []forge.Job
	covered := map[int64]bool{}
	for _, p := range projects {
		js, err := f.projectPending(ctx, p)
		if err != nil {
			return nil, nil, start, err
		}
		all = append(all, js...)
		covered[p.id] = true
	}
	f.mu.Lock()
	f.polled.jobs, f.polled.covered, f.polled.at = all, covered, start
	f.mu.Unlock()
	return append([]forge.Job(nil), all...), covered, start, nil
}

// pollProjects returns the group's or instance's most recently active
// projects, at most MaxPolledProjects, refreshed every projectListTTL.
func (f *Forge) pollProjects(ctx context.Context) ([]projectRef, error) {
	f.mu.Lock()
	if p := f.polled; p.projects != nil && f.o.Now().Sub(p.projectsAt) < projectListTTL {
		f.mu.Unlock()
		return p.projects, nil
	}
	f.mu.Unlock()
	lo := gl.ListOptions{Page: 1, PerPage: int64(min(f.o.MaxPolledProjects, 100))}
	var ps []*gl.Project
	var err error
	if f.o.Scope.Kind == ScopeGroup {
		var id int64
		if id, err = f.scopeRef(ctx); err != nil {
			return nil, err
		}
		ps, _, err = f.api.Groups.ListGroupProjects(id, &gl.ListGroupProjectsOptions{
			ListOptions: lo, IncludeSubGroups: gl.Ptr(true), Archived: gl.Ptr(false),
			OrderBy: gl.Ptr("last_activity_at"), Sort: gl.Ptr("desc"), Simple: gl.Ptr(true),
		}, gl.WithContext(ctx))
	} else {
		ps, _, err = f.api.Projects.ListProjects(&gl.ListProjectsOptions{
			ListOptions: lo, Archived: gl.Ptr(false),
			OrderBy: gl.Ptr("last_activity_at"), Sort: gl.Ptr("desc"), Simple: gl.Ptr(true),
		}, gl.WithContext(ctx))
	}
	if err != nil {
		return nil, fmt.Errorf("gitlab: list projects to poll: %w", err)
	}
	out := make([]projectRef, 0, len(ps))
	for _, p := range ps {
		if len(out) == f.o.MaxPolledProjects {
			break
		}
		out = append(out, projectRef{id: p.ID, path: p.PathWithNamespace})
	}
	f.mu.Lock()
	f.polled.projects, f.polled.projectsAt = out, f.o.Now()
	f.mu.Unlock()
	return out, nil
}

// projectPending is GET /projects/:id/jobs?scope[]=pending, all pages.
func (f *Forge) projectPending(ctx context.Context, p projectRef) ([]forge.Job, error) {
	var out []forge.Job
	scope := []gl.BuildStateValue{gl.Pending}
	for page := int64(1); page <= maxPages; {
		js, resp, err := f.api.Jobs.ListProjectJobs(p.id, &gl.ListJobsOptions{
			ListOptions: gl.ListOptions{Page: page, PerPage: 100}, Scope: &scope,
		}, gl.WithContext(ctx))
		if err != nil {
			return nil, fmt.Errorf("gitlab: list pending jobs of %s: %w", p.path, err)
		}
		for _, j := range js {
			if j.Status != string(gl.Pending) {
				continue
			}
			out = append(out, toJob(j.ID, j.TagList, p.path, j.CreatedAt))
		}
		if resp == nil || resp.NextPage == 0 {
			break
		}
		page = resp.NextPage
	}
	return out, nil
}

func toJob(id int64, tags []string, repo string, created *time.Time) forge.Job {
	j := forge.Job{ID: strconv.FormatInt(id, 10), Labels: append([]string(nil), tags...), Repo: repo}
	if created != nil {
		j.QueuedAt = *created
	}
	return j
}

// mergeHooked adds the webhook-announced pending jobs the poll does not
// speak for, and forgets those it does: a poll that covered a job's
// project after the webhook came knows better than the webhook.
func (f *Forge) mergeHooked(jobs []forge.Job, covered map[int64]bool, at time.Time) []forge.Job {
	listed := map[string]bool{}
	for _, j := range jobs {
		listed[j.ID] = true
	}
	now := f.o.Now()
	f.mu.Lock()
	defer f.mu.Unlock()
	for id, h := range f.hooked {
		switch {
		case covered[h.project] && h.at.Before(at), now.Sub(h.at) > hookTTL:
			delete(f.hooked, id)
		case !listed[h.job.ID]:
			jobs = append(jobs, h.job)
		}
	}
	return jobs
}
