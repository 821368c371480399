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

	gl "gitlab.com/gitlab-org/api/client-go/v2"
)

// listedProject is a project of a group's listing (the full entity),
// with group_runners_enabled when GitLab shows it to the token.
type listedProject struct {
	ID                  int64  `json:"id"`
	PathWithNamespace   string `json:"path_with_namespace"`
	GroupRunnersEnabled *bool  `json:"group_runners_enabled"`
}

// listGroupProjectsPage is one page of GET /groups/:id/projects, full
// entities (group_runners_enabled is not in simple ones).
func (f *Forge) listGroupProjectsPage(ctx context.Context, gid, page int64) ([]listedProject, *gl.Response, error) {
	opt := &gl.ListGroupProjectsOptions{
		ListOptions: gl.ListOptions{Page: page, PerPage: 100}, IncludeSubGroups: gl.Ptr(true),
		Archived: gl.Ptr(false), OrderBy: gl.Ptr("id"), Sort: gl.Ptr("asc"),
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
