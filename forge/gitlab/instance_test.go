package gitlab

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/nixos-fireactions/nixos-fireactions/internal/double/gitlabdouble"
)

// TestInstanceScopeListsPendingJobsThroughGraphQL: an instance scope
// reads every pending job with the admin GraphQL query, all pages, and
// lists no projects.
func TestInstanceScopeListsPendingJobsThroughGraphQL(t *testing.T) {
	e := newEnv(t, Scope{Kind: ScopeInstance})
	var want []int64
	for i := range 150 {
		p := fmt.Sprintf("g%d/p%d", i%3, i)
		e.gl.AddProject(p)
		want = append(want, e.gl.AddJob(p, "j", []string{"linux"}, "true"))
	}
	e.gl.SetJobStatus(want[0], "running")
	want = want[1:]
	before := len(e.gl.Calls())
	js, err := e.f.QueuedJobs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(jobIDs(js), ids(want...)) {
		t.Fatalf("queued %d jobs, want the %d pending ones", len(js), len(want))
	}
	for _, j := range js {
		if !slices.Equal(j.Labels, []string{"linux"}) || !strings.HasPrefix(j.Repo, "g") || j.QueuedAt.IsZero() {
			t.Fatalf("job = %+v", j)
		}
	}
	calls := e.gl.Calls()[before:]
	graphql := 0
	for _, c := range calls {
		switch {
		case c == "POST /api/graphql":
			graphql++
		case strings.Contains(c, "/projects"):
			t.Fatalf("an instance poll called %s", c)
		}
	}
	if graphql != 2 {
		t.Fatalf("%d GraphQL pages for 149 pending jobs, want 2 (calls %v)", graphql, calls)
	}
}

// TestInstanceScopeNeedsAnAdministratorsToken: GitLab answers a
// non-administrator's jobs query with an empty list, so the scope checks
// the token and fails clearly instead of seeing no demand. Positive
// control: the administrator's token sees the job.
func TestInstanceScopeNeedsAnAdministratorsToken(t *testing.T) {
	const userToken = "glpat-not-an-admin"
	e := newEnv(t, Scope{Kind: ScopeInstance}, func(o *Options) { o.Token = userToken })
	e.gl.AddToken(userToken, gitlabdouble.Grant{Scopes: []string{"api", "create_runner", "manage_runner"}, Role: gitlabdouble.Owner})
	id := e.gl.AddJob("acme/app", "build", nil, "true")
	_, err := e.f.QueuedJobs(context.Background())
	if err == nil || !strings.Contains(err.Error(), "administrator") {
		t.Fatalf("QueuedJobs with a non-admin token: %v, want an error naming the administrator's token", err)
	}
	admin := newEnv(t, Scope{Kind: ScopeInstance})
	admin.gl.AddJob("acme/app", "build", nil, "true")
	js, err := admin.f.QueuedJobs(context.Background())
	if err != nil || !slices.Equal(jobIDs(js), ids(id)) {
		t.Fatalf("admin: queued %v, %v", jobIDs(js), err)
	}
}
