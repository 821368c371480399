package gitlab

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	gl "gitlab.com/gitlab-org/api/client-go/v2"

	"github.com/nixos-fireactions/nixos-fireactions/forge"
)

// pendingJobsQuery is GitLab's admin-only jobs query (Query.jobs, the one
// the admin area's job list uses): every pending job of the instance,
// newest first, 100 a page. For a token that is not an administrator's
// GitLab answers an empty list, not an error, so the scope checks the
// token first (instanceAdmin).
const pendingJobsQuery = `query fireactionsPendingJobs($after: String) {
  jobs(statuses: [PENDING], first: 100, after: $after) {
    pageInfo { hasNextPage endCursor }
    nodes { id status tags createdAt project { id fullPath sharedRunnersEnabled } }
  }
}`

// pendingJobsPage is one page of pendingJobsQuery's answer.
type pendingJobsPage struct {
	Data struct {
		Jobs *struct {
			PageInfo struct {
				HasNextPage bool   `json:"hasNextPage"`
				EndCursor   string `json:"endCursor"`
			} `json:"pageInfo"`
			Nodes []struct {
				ID        string    `json:"id"`
				Status    string    `json:"status"`
				Tags      []string  `json:"tags"`
				CreatedAt time.Time `json:"createdAt"`
				Project   *struct {
					ID                   string `json:"id"`
					FullPath             string `json:"fullPath"`
					SharedRunnersEnabled *bool  `json:"sharedRunnersEnabled"`
				} `json:"project"`
			} `json:"nodes"`
		} `json:"jobs"`
	} `json:"data"`
	Errors []struct {
		Message string `json:"message"`
	} `json:"errors"`
}

// instancePending lists the instance's pending jobs through GraphQL, and
// the projects they are in (for the webhook merge: the answer speaks for
// every project).
// Jobs of projects that turned instance runners off are no demand
// (runnersoff.go); the projects are returned in off for the webhook
// merge.
func (f *Forge) instancePending(ctx context.Context) ([]forge.Job, map[int64]bool, error) {
	if err := f.instanceAdmin(ctx); err != nil {
		return nil, nil, err
	}
	var out []forge.Job
	off := map[int64]bool{}
	after := ""
	for range maxPages {
		q := gl.GraphQLQuery{Query: pendingJobsQuery}
		if after != "" {
			q.Variables = map[string]any{"after": after}
		}
		var page pendingJobsPage
		if _, err := f.api.GraphQL.Do(q, &page, gl.WithContext(ctx)); err != nil {
			return nil, nil, fmt.Errorf("gitlab: list the instance's pending jobs (GraphQL): %w", err)
		}
		if len(page.Errors) > 0 {
			return nil, nil, fmt.Errorf("gitlab: list the instance's pending jobs (GraphQL): %s", page.Errors[0].Message)
		}
		jobs := page.Data.Jobs
		if jobs == nil {
			return nil, nil, fmt.Errorf("gitlab: list the instance's pending jobs (GraphQL): no jobs in the answer")
		}
		for _, n := range jobs.Nodes {
			id, err := globalID(n.ID, "Ci::Build")
			if err != nil || n.Status != "PENDING" || n.Project == nil {
				continue // not a build waiting for a runner (a bridge, say)
			}
			if f.runnersOff(n.Project.SharedRunnersEnabled, "sharedRunnersEnabled", n.Project.FullPath) {
				if pid, err := globalID(n.Project.ID, "Project"); err == nil {
					off[pid] = true
				}
				continue
			}
			created := n.CreatedAt
			out = append(out, toJob(id, n.Tags, n.Project.FullPath, &created))
		}
		if !jobs.PageInfo.HasNextPage || jobs.PageInfo.EndCursor == "" {
			break
		}
		after = jobs.PageInfo.EndCursor
	}
	return out, off, nil
}

// instanceAdmin checks, once, that the token is an administrator's in
// Admin Mode: GET /user shows is_admin only then.
func (f *Forge) instanceAdmin(ctx context.Context) error {
	f.mu.Lock()
	ok := f.admin
	f.mu.Unlock()
	if ok {
		return nil
	}
	u, _, err := f.api.Users.CurrentUser(gl.WithContext(ctx))
	if err != nil {
		return fmt.Errorf("gitlab: check the instance scope's token: %w", err)
	}
	if !u.IsAdmin {
		return fmt.Errorf("gitlab: an instance scope needs an administrator's token (with the admin_mode scope where Admin Mode is on): %s is not one", u.Username)
	}
	f.mu.Lock()
	f.admin = true
	f.mu.Unlock()
	return nil
}

// globalID is the numeric ID of a GitLab global ID gid://gitlab/<model>/<n>.
func globalID(gid, model string) (int64, error) {
	rest, ok := strings.CutPrefix(gid, "gid://gitlab/"+model+"/")
	if !ok {
		return 0, fmt.Errorf("gitlab: %q is not a %s global ID", gid, model)
	}
	return strconv.ParseInt(rest, 10, 64)
}
