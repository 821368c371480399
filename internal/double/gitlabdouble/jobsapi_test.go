package gitlabdouble

import (
	"context"
	"errors"
	"net/http/httptest"
	"testing"

	gl "gitlab.com/gitlab-org/api/client-go/v2"
)

// runningJob creates a project runner in acme/app and lets it take a new
// job; it returns the runner's and the job's ids.
func runningJob(t *testing.T, s *Server, srv *httptest.Server, c *gl.Client, info map[string]any) (int64, int64) {
	t.Helper()
	pid := s.projectID(t, "acme/app")
	r, _, err := c.Users.CreateUserRunner(&gl.CreateUserRunnerOptions{RunnerType: gl.Ptr("project_type"), ProjectID: &pid, TagList: &[]string{"x"}})
	if err != nil {
		t.Fatal(err)
	}
	id := s.AddJob("acme/app", "build", []string{"x"}, "true")
	rc := &RunnerClient{URL: srv.URL, Token: r.Token}
	if j, err := rc.RequestJob(context.Background(), info); err != nil || j == nil || j.ID != id {
		t.Fatalf("take job %d: %+v, %v", id, j, err)
	}
	return r.ID, id
}

func (s *Server) projectID(t *testing.T, path string) int64 {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.projectByPathLocked(path)
	if p == nil {
		t.Fatalf("no project %s", path)
	}
	return p.ID
}

func clientWith(t *testing.T, s *Server, srv *httptest.Server, token string, g Grant) *gl.Client {
	t.Helper()
	s.AddToken(token, g)
	c, err := gl.NewClient(token, gl.WithBaseURL(srv.URL), gl.WithoutRetries())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestRunnerJobsListingAsGitLabDocuments: GET /runners/:id/jobs lists the
// runner's jobs with their project, for a token with api or read_api of a
// Maintainer (an administrator for instance runners); a deleted runner is
// not found.
func TestRunnerJobsListingAsGitLabDocuments(t *testing.T) {
	s, srv, admin := newDouble(t)
	s.AddProject("acme/app")
	rid, jid := runningJob(t, s, srv, admin, nil)
	s.AddJob("acme/app", "another", []string{"x"}, "true") // pending, nobody's

	js, _, err := admin.Runners.ListRunnerJobs(rid, &gl.ListRunnerJobsOptions{Status: gl.Ptr("running")})
	if err != nil || len(js) != 1 || js[0].ID != jid || js[0].Project == nil || js[0].Project.PathWithNamespace != "acme/app" || js[0].Runner.ID != rid {
		t.Fatalf("ListRunnerJobs = %+v, %v", js, err)
	}
	if js, _, err := admin.Runners.ListRunnerJobs(rid, &gl.ListRunnerJobsOptions{Status: gl.Ptr("success")}); err != nil || len(js) != 0 {
		t.Fatalf("success jobs = %+v, %v", js, err)
	}
	if _, _, err := admin.Runners.ListRunnerJobs(rid, &gl.ListRunnerJobsOptions{Status: gl.Ptr("pending")}); statusOf(err) != 400 {
		t.Fatalf("status=pending: %v, want 400", err)
	}
	for name, tc := range map[string]struct {
		g    Grant
		want int
	}{
		"read_api maintainer": {Grant{Scopes: []string{"read_api"}, Role: Maintainer}, 200},
		"api developer":       {Grant{Scopes: []string{"api"}, Role: Developer}, 403},
		"create_runner owner": {Grant{Scopes: []string{"create_runner", "manage_runner"}, Role: Owner}, 403},
	} {
		c := clientWith(t, s, srv, "glpat-"+name, tc.g)
		_, _, err := c.Runners.ListRunnerJobs(rid, nil)
		if got := statusOf(err); (tc.want == 200 && err != nil) || (tc.want != 200 && got != tc.want) {
			t.Errorf("%s: %v, want %d", name, err, tc.want)
		}
	}
	if _, err := admin.Runners.RemoveRunner(rid); err != nil {
		t.Fatal(err)
	}
	if _, _, err := admin.Runners.ListRunnerJobs(rid, nil); statusOf(err) != 404 {
		t.Fatalf("jobs of a deleted runner: %v, want 404", err)
	}
	if s.Jobs()[jid].Status != "running" {
		t.Fatal("deleting the runner ended its job")
	}
}

// TestCancelAsGitLabDoes: POST /projects/:id/jobs/:job_id/cancel needs
// the api scope and the Developer role (for a job of a branch that is not
// protected); it cancels a pending or running job (whose job token then
// takes no update), refuses a finished one (422, left as it is), leaves a
// gracefully cancelling runner's job canceling, and only a Maintainer's
// force ends that.
func TestCancelAsGitLabDoes(t *testing.T) {
	s, srv, admin := newDouble(t)
	s.AddProject("acme/app")
	s.Unprotect("acme/app", "main")
	_, jid := runningJob(t, s, srv, admin, nil)
	tok := s.jobs[jid].Token

	readOnly := clientWith(t, s, srv, "glpat-ro", Grant{Scopes: []string{"read_api"}, Role: Owner})
	if _, _, err := readOnly.Jobs.CancelJob("acme/app", jid); statusOf(err) != 403 {
		t.Fatalf("cancel with read_api: %v, want 403", err)
	}
	reporter := clientWith(t, s, srv, "glpat-rep", Grant{Scopes: []string{"api"}, Role: Reporter})
	if _, _, err := reporter.Jobs.CancelJob("acme/app", jid); statusOf(err) != 403 {
		t.Fatalf("cancel as a Reporter: %v, want 403", err)
	}
	dev := clientWith(t, s, srv, "glpat-dev", Grant{Scopes: []string{"api"}, Role: Developer})
	if _, _, err := dev.Jobs.CancelJob("other/none", jid); statusOf(err) != 404 {
		t.Fatalf("cancel in an unknown project: %v, want 404", err)
	}
	if s.Jobs()[jid].Status != "running" {
		t.Fatal("a refused cancel changed the job")
	}
	j, _, err := dev.Jobs.CancelJob("acme/app", jid)
	if err != nil || j.Status != "canceled" {
		t.Fatalf("cancel as a Developer: %+v, %v", j, err)
	}
	rc := &RunnerClient{URL: srv.URL}
	if _, err := rc.UpdateJob(context.Background(), jid, tok, "success", 0, nil); !errors.Is(err, ErrForbidden) {
		t.Fatalf("update of a cancelled job: %v, want 403", err)
	}
	if _, _, err := dev.Jobs.CancelJob("acme/app", jid); statusOf(err) != 422 {
		t.Fatalf("cancel of a cancelled job: %v, want 422", err)
	}

	_, done := runningJob(t, s, srv, admin, nil)
	if _, err := rc.UpdateJob(context.Background(), done, s.jobs[done].Token, "success", 0, nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := dev.Jobs.CancelJob("acme/app", done); statusOf(err) != 422 || s.Jobs()[done].Status != "success" {
		t.Fatalf("cancel of a finished job: %v, job %s; want 422, success", err, s.Jobs()[done].Status)
	}

	_, graceful := runningJob(t, s, srv, admin, map[string]any{"features": map[string]any{"cancel_gracefully": true}})
	if j, _, err := dev.Jobs.CancelJob("acme/app", graceful); err != nil || j.Status != "canceling" {
		t.Fatalf("cancel of a graceful runner's job: %+v, %v; want canceling", j, err)
	}
	force := &gl.CancelJobOptions{Force: gl.Ptr(true)}
	//nolint:staticcheck // client-go's only way to send force
	if _, _, err := dev.Jobs.CancelJobWithOptions("acme/app", graceful, force); statusOf(err) != 422 {
		t.Fatalf("force by a Developer: %v, want 422", err)
	}
	maint := clientWith(t, s, srv, "glpat-maint", Grant{Scopes: []string{"api"}, Role: Maintainer})
	//nolint:staticcheck // client-go's only way to send force
	if j, _, err := maint.Jobs.CancelJobWithOptions("acme/app", graceful, force); err != nil || j.Status != "canceled" {
		t.Fatalf("force by a Maintainer: %+v, %v", j, err)
	}
}

// TestCancellingAJobOfAProtectedBranch: GitLab protects the default
// branch for Maintainers, and a job of a protected branch is cancelled
// only by a user who may push or merge to it (Ci::BuildPolicy), so a
// Developer is refused (403) and the job runs on; a Maintainer may
// (the positive control); a job of a branch no one may push to is
// cancelled by no one, administrators neither (ProtectedRefAccess has
// no administrator bypass).
func TestCancellingAJobOfAProtectedBranch(t *testing.T) {
	s, srv, admin := newDouble(t)
	s.AddProject("acme/app")
	dev := clientWith(t, s, srv, "glpat-dev", Grant{Scopes: []string{"api"}, Role: Developer})
	maint := clientWith(t, s, srv, "glpat-maint", Grant{Scopes: []string{"api"}, Role: Maintainer})

	_, jid := runningJob(t, s, srv, admin, nil)
	if _, _, err := dev.Jobs.CancelJob("acme/app", jid); statusOf(err) != 403 || s.Jobs()[jid].Status != "running" {
		t.Fatalf("a Developer cancelled a job of protected main: %v, job %s; want 403, running", err, s.Jobs()[jid].Status)
	}
	if j, _, err := maint.Jobs.CancelJob("acme/app", jid); err != nil || j.Status != "canceled" {
		t.Fatalf("cancel as a Maintainer: %+v, %v", j, err)
	}

	s.Protect("acme/app", "main", NoOne)
	_, locked := runningJob(t, s, srv, admin, nil)
	if _, _, err := maint.Jobs.CancelJob("acme/app", locked); statusOf(err) != 403 {
		t.Fatalf("a Maintainer cancelled a job of a branch no one may push to: %v, want 403", err)
	}
	if _, _, err := admin.Jobs.CancelJob("acme/app", locked); statusOf(err) != 403 || s.Jobs()[locked].Status != "running" {
		t.Fatalf("an administrator cancelled a job of a branch no one may push to: %v, job %s; want 403, running", err, s.Jobs()[locked].Status)
	}
}

// TestJobsOfProjectWithCICDDisabled: a project whose CI/CD is disabled
// (builds_access_level disabled) answers GET /projects/:id/jobs 403, even
// to an administrator, as GitLab's authorize_read_builds! does; another
// project still lists its jobs (the positive control).
func TestJobsOfProjectWithCICDDisabled(t *testing.T) {
	s, _, admin := newDouble(t)
	s.AddProject("acme/app")
	s.AddProject("acme/off")
	s.AddJob("acme/app", "build", nil, "true")
	s.AddJob("acme/off", "build", nil, "true")
	s.DisableBuilds("acme/off")
	if js, _, err := admin.Jobs.ListProjectJobs("acme/app", nil); err != nil || len(js) != 1 {
		t.Fatalf("jobs of acme/app = %+v, %v", js, err)
	}
	if _, _, err := admin.Jobs.ListProjectJobs("acme/off", nil); statusOf(err) != 403 {
		t.Fatalf("jobs of a project with CI/CD disabled: %v, want 403", err)
	}
}
