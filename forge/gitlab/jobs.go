package gitlab

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"time"

	gl "gitlab.com/gitlab-org/api/client-go/v2"

	"github.com/nixos-fireactions/nixos-fireactions/forge"
)

// An instance scope lists its pending jobs with GitLab's admin GraphQL
// query (instance.go), 100 a page. GitLab's APIs have no listing of the
// pending jobs of a group: a
// group scope lists all of the group's projects (subgroups included, every
// page, cached for projectListTTL) and lists the pending jobs of up to
// MaxPolledProjects of them per poll, round-robin, at most every
// widePollEvery. The API calls of one poll are thus bounded by
// MaxPolledProjects job listings (one page each unless a project has more
// than 100 pending jobs), plus ceil(projects/100) project-list pages once
// per projectListTTL; a group of up to MaxPolledProjects projects has
// every project polled in every poll.
const (
	projectListTTL = 5 * time.Minute
	widePollEvery  = 10 * time.Second
	// hookTTL is how long a pending job known only from a webhook counts
	// as demand when no poll covers its project.
	hookTTL = 10 * time.Minute
	// maxProjectPages bounds the project-list walk: 100 per page.
	maxProjectPages = 200
)

// pollState is what polling a group or instance learnt.
type pollState struct {
	projects   []projectRef
	off        map[int64]bool // projects that turned this scope's runners off
	projectsAt time.Time
	next       int                   // round-robin cursor into projects
	byProject  map[int64]projectJobs // pending jobs per polled project
	at         time.Time             // when the last poll started
}

// projectJobs is one project's pending jobs as of a poll.
type projectJobs struct {
	jobs []forge.Job
	at   time.Time
}

// everyProject keys the poll of an instance scope, which speaks for
// every project.
const everyProject int64 = -1

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
	jobs, covered, err := f.poll(ctx)
	if err != nil {
		return nil, err
	}
	jobs = f.mergeHooked(jobs, covered)
	f.mu.Lock()
	changes := f.tellPollLocked(jobs)
	f.mu.Unlock()
	f.tell(changes)
	return jobs, nil
}

// poll lists pending jobs: the project's, the instance's, or the polled
// projects' of a group (cached for widePollEvery). covered says when each
// project the answer speaks for was polled.
func (f *Forge) poll(ctx context.Context) ([]forge.Job, map[int64]time.Time, error) {
	start := f.o.Now()
	if f.o.Scope.Kind == ScopeProject {
		id, err := f.scopeRef(ctx)
		if err != nil {
			return nil, nil, err
		}
		js, err := f.projectPending(ctx, projectRef{id: id, path: f.o.Scope.Path})
		return js, map[int64]time.Time{id: start}, err
	}
	f.mu.Lock()
	if p := f.polled; !p.at.IsZero() && start.Sub(p.at) < widePollEvery {
		jobs, covered := p.view()
		f.mu.Unlock()
		return jobs, covered, nil
	}
	f.mu.Unlock()
	if f.o.Scope.Kind == ScopeInstance {
		jobs, off, err := f.instancePending(ctx)
		if err != nil {
			return nil, nil, err
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		f.polled.off = off
		f.polled.byProject = map[int64]projectJobs{everyProject: {jobs: jobs, at: start}}
		f.polled.at = start
		jobs, covered := f.polled.view()
		return jobs, covered, nil
	}
	projects, err := f.pollProjects(ctx)
	if err != nil {
		return nil, nil, err
	}
	f.mu.Lock()
	first := f.polled.next
	f.mu.Unlock()
	n := min(len(projects), f.o.MaxPolledProjects)
	got := make(map[int64]projectJobs, n)
	for i := range n {
		p := projects[(first+i)%len(projects)]
		js, err := f.projectPending(ctx, p)
		if code := statusOf(err); code == http.StatusForbidden || code == http.StatusNotFound {
			f.noteUnreadable(p, err)
			js, err = nil, nil
		}
		if err != nil {
			return nil, nil, err
		}
		got[p.id] = projectJobs{jobs: js, at: start}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	keep := make(map[int64]projectJobs, len(projects))
	for _, p := range projects { // forget projects gone from the scope
		if pj, ok := got[p.id]; ok {
			keep[p.id] = pj
		} else if pj, ok := f.polled.byProject[p.id]; ok {
			keep[p.id] = pj
		}
	}
	f.polled.byProject, f.polled.at = keep, start
	if len(projects) > 0 {
		f.polled.next = (first + n) % len(projects)
	}
	jobs, covered := f.polled.view()
	return jobs, covered, nil
}

// noteUnreadable logs, at most once per projectListTTL per project, a
// group's project whose jobs the token cannot list: 403 when the project
// has CI/CD disabled (builds_access_level disabled), 404 when it was
// deleted since the project list was cached. Such a project counts as
// having no pending jobs, so one of them does not blind the group's poll.
func (f *Forge) noteUnreadable(p projectRef, err error) {
	now := f.o.Now()
	f.mu.Lock()
	if f.unreadable == nil {
		f.unreadable = map[int64]time.Time{}
	}
	for id, at := range f.unreadable { // forget those not met for long
		if now.Sub(at) >= projectListTTL {
			delete(f.unreadable, id)
		}
	}
	_, logged := f.unreadable[p.id]
	if !logged {
		f.unreadable[p.id] = now
	}
	f.mu.Unlock()
	if !logged {
		f.log.Warn("gitlab: cannot list a project's jobs; counting none", "pool", f.o.Pool, "project", p.path, "err", err)
	}
}

// view is every polled project's pending jobs and when each was polled.
func (p *pollState) view() ([]forge.Job, map[int64]time.Time) {
	var jobs []forge.Job
	covered := make(map[int64]time.Time, len(p.byProject))
	for id, pj := range p.byProject {
		jobs = append(jobs, pj.jobs...)
		covered[id] = pj.at
	}
	slices.SortFunc(jobs, func(a, b forge.Job) int { return a.QueuedAt.Compare(b.QueuedAt) })
	return jobs, covered
}

// pollProjects returns all of the group's unarchived projects that did
// not turn group runners off, subgroups included, in ID order, refreshed
// every projectListTTL.
func (f *Forge) pollProjects(ctx context.Context) ([]projectRef, error) {
	f.mu.Lock()
	if p := f.polled; p.projects != nil && f.o.Now().Sub(p.projectsAt) < projectListTTL {
		f.mu.Unlock()
		return p.projects, nil
	}
	f.mu.Unlock()
	gid, err := f.scopeRef(ctx)
	if err != nil {
		return nil, err
	}
	out, off := []projectRef{}, map[int64]bool{}
	for page := int64(1); page <= maxProjectPages; {
		// Ordered by ID, so pages stay put while projects change.
		ps, resp, err := f.listGroupProjectsPage(ctx, gid, page)
		if err != nil {
			return nil, fmt.Errorf("gitlab: list the projects of %s to poll (page %d): %w", f.o.Scope.Path, page, err)
		}
		for _, p := range ps {
			if f.runnersOff(p.GroupRunnersEnabled, "group_runners_enabled", p.PathWithNamespace) {
				off[p.ID] = true
				continue
			}
			out = append(out, projectRef{id: p.ID, path: p.PathWithNamespace})
		}
		if resp == nil || resp.NextPage == 0 {
			break
		}
		page = resp.NextPage
	}
	f.mu.Lock()
	f.polled.projects, f.polled.off, f.polled.projectsAt = out, off, f.o.Now()
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
func (f *Forge) mergeHooked(jobs []forge.Job, covered map[int64]time.Time) []forge.Job {
	listed := map[string]bool{}
	for _, j := range jobs {
		listed[j.ID] = true
	}
	now := f.o.Now()
	f.mu.Lock()
	defer f.mu.Unlock()
	for id, h := range f.hooked {
		if f.polled.off[h.project] { // a webhook of a project our runners may not serve
			delete(f.hooked, id)
			continue
		}
		at, ok := covered[h.project]
		if all, every := covered[everyProject]; every {
			at, ok = all, true
		}
		switch {
		case ok && h.at.Before(at), now.Sub(h.at) > hookTTL:
			delete(f.hooked, id)
		case !listed[h.job.ID]:
			jobs = append(jobs, h.job)
		}
	}
	return jobs
}
