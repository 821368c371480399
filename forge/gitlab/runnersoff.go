package gitlab

// A project may turn off the instance runners (shared_runners_enabled)
// or the group runners (group_runners_enabled) in Settings > CI/CD >
// Runners; GitLab then gives its jobs to no runner of that kind, so they
// are no demand for an instance or group scope. GitLab shows
// shared_runners_enabled in every full project entity (not in simple=true
// listings) and in GraphQL's Project.sharedRunnersEnabled, but
// group_runners_enabled only to a user who may admin the project
// (Maintainer or Owner, or an administrator): with a token that does not
// see it, the scope says so once in its log and counts the project's
// jobs, erring towards a VM too many rather than a job never served.

import (
	"context"
	"fmt"
	"net/http"
	"time"

	gl "gitlab.com/gitlab-org/api/client-go/v2"
)

// listedProject is a project of a group's listing (the full entity),
// with group_runners_enabled when GitLab shows it to the token.
type listedProject struct {
	ID                   int64  `json:"id"`
	PathWithNamespace    string `json:"path_with_namespace"`
	GroupRunnersEnabled  *bool  `json:"group_runners_enabled"`
	SharedRunnersEnabled *bool  `json:"shared_runners_enabled"`
}

// listGroupProjectsPage is one page of GET /groups/:id/projects, full
// entities (group_runners_enabled is not in simple ones).
func (f *Forge) listGroupProjectsPage(ctx context.Context, gid, page int64) ([]listedProject, *gl.Response, error) {
	opt := &gl.ListGroupProjectsOptions{
		ListOptions: gl.ListOptions{Page: page, PerPage: 100}, IncludeSubGroups: gl.Ptr(true),
		Archived: gl.Ptr(false), OrderBy: gl.Ptr("id"), Sort: gl.Ptr("asc"),
		// Not the projects other groups shared with this one (GitLab's
		// default is to list them): group runners serve only the
		// group's own projects.
		WithShared: gl.Ptr(false),
	}
	req, err := f.api.NewRequest(http.MethodGet, fmt.Sprintf("groups/%d/projects", gid), opt, []gl.RequestOptionFunc{gl.WithContext(ctx)})
	if err != nil {
		return nil, nil, err
	}
	var ps []listedProject
	resp, err := f.api.Do(req, &ps)
	return ps, resp, err
}

// runnersOff reports whether a project turned this scope's kind of
// runners off: enabled is what GitLab showed (nil: not shown, counted as
// on, and said once in the log).
func (f *Forge) runnersOff(enabled *bool, field, project string) bool {
	if enabled != nil {
		return !*enabled
	}
	f.mu.Lock()
	said := f.settingUnseen
	f.settingUnseen = true
	f.mu.Unlock()
	if !said {
		f.log.Warn("gitlab: the token is not shown whether projects turned this scope's runners off; counting their jobs as demand (said once)",
			"pool", f.o.Pool, "field", field, "project", project, "hint", "group_runners_enabled is shown to the Maintainer or Owner role only")
	}
	return false
}

// servingScopes drops from scopes those whose last listing found the
// project (pid) turned their runners off, unless GitLab now says it
// turned them back on: the listing is cached for projectListTTL, so a
// webhook of such a project re-reads it (one GET /projects/:id for all
// the scopes), and a scope that sees it on again forgets the flag and
// lists its projects afresh at its next poll.
func (d *Driver) servingScopes(ctx context.Context, pid int64, path string, scopes []*Forge) []*Forge {
	var p *listedProject
	read := false
	out := make([]*Forge, 0, len(scopes))
	for _, f := range scopes {
		f.mu.Lock()
		off := f.polled.off[pid]
		f.mu.Unlock()
		if !off {
			out = append(out, f)
			continue
		}
		if !read {
			read = true
			var err error
			if p, err = d.readProject(ctx, pid); err != nil {
				d.log.Warn("gitlab webhook: re-read a project that had turned our runners off; still counting it off",
					"project", path, "job_project", pid, "err", err)
			}
		}
		if p == nil || f.offIn(p) {
			continue
		}
		f.mu.Lock()
		delete(f.polled.off, pid)
		f.polled.projectsAt = time.Time{}
		f.mu.Unlock()
		out = append(out, f)
	}
	return out
}

// readProject is GET /projects/:id, the full entity.
func (d *Driver) readProject(ctx context.Context, pid int64) (*listedProject, error) {
	req, err := d.api.NewRequest(http.MethodGet, fmt.Sprintf("projects/%d", pid), nil, []gl.RequestOptionFunc{gl.WithContext(ctx)})
	if err != nil {
		return nil, err
	}
	var p listedProject
	if _, err := d.api.Do(req, &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// offIn reports whether project p turned this scope's kind of runners
// off: group runners for a group scope, instance runners otherwise.
func (f *Forge) offIn(p *listedProject) bool {
	if f.o.Scope.Kind == ScopeGroup {
		return f.runnersOff(p.GroupRunnersEnabled, "group_runners_enabled", p.PathWithNamespace)
	}
	return f.runnersOff(p.SharedRunnersEnabled, "shared_runners_enabled", p.PathWithNamespace)
}
