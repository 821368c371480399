package gitlabdouble

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	gl "gitlab.com/gitlab-org/api/client-go/v2"
)

const testToken = "glpat-test-access-token"

func newDouble(t *testing.T) (*Server, *httptest.Server, *gl.Client) {
	t.Helper()
	s := New(testToken)
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	c, err := gl.NewClient(testToken, gl.WithBaseURL(srv.URL), gl.WithoutRetries())
	if err != nil {
		t.Fatal(err)
	}
	return s, srv, c
}

func statusOf(err error) int {
	if errors.Is(err, gl.ErrNotFound) {
		return 404
	}
	var er *gl.ErrorResponse
	if errors.As(err, &er) && er.Response != nil {
		return er.Response.StatusCode
	}
	return 0
}

// TestCreateRunnerValidatesAsGitLabDocuments: POST /user/runners through
// client-go, with the parameter rules of GitLab's documentation.
func TestCreateRunnerValidatesAsGitLabDocuments(t *testing.T) {
	s, _, c := newDouble(t)
	pid := s.AddProject("acme/app")
	gid := s.AddGroup("acme")
	tests := []struct {
		name string
		opt  gl.CreateUserRunnerOptions
		want int
	}{
		{"project runner", gl.CreateUserRunnerOptions{RunnerType: gl.Ptr("project_type"), ProjectID: &pid, TagList: &[]string{"linux"}}, 201},
		{"group runner", gl.CreateUserRunnerOptions{RunnerType: gl.Ptr("group_type"), GroupID: &gid, RunUntagged: gl.Ptr(true)}, 201},
		{"instance runner", gl.CreateUserRunnerOptions{RunnerType: gl.Ptr("instance_type"), TagList: &[]string{"x"}}, 201},
		{"no runner_type", gl.CreateUserRunnerOptions{ProjectID: &pid}, 400},
		{"group runner without group_id", gl.CreateUserRunnerOptions{RunnerType: gl.Ptr("group_type")}, 400},
		{"unknown project", gl.CreateUserRunnerOptions{RunnerType: gl.Ptr("project_type"), ProjectID: gl.Ptr(int64(999))}, 403},
		{"maximum_timeout under 10m", gl.CreateUserRunnerOptions{RunnerType: gl.Ptr("instance_type"), MaximumTimeout: gl.Ptr(int64(60))}, 400},
		{"bad access_level", gl.CreateUserRunnerOptions{RunnerType: gl.Ptr("instance_type"), AccessLevel: gl.Ptr("protected")}, 400},
		{"no tags and not run_untagged", gl.CreateUserRunnerOptions{RunnerType: gl.Ptr("instance_type"), RunUntagged: gl.Ptr(false)}, 400},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, _, err := c.Users.CreateUserRunner(&tc.opt)
			if tc.want == 201 {
				if err != nil || r.ID == 0 || !strings.HasPrefix(r.Token, "glrt-") {
					t.Fatalf("CreateUserRunner = %+v, %v", r, err)
				}
				return
			}
			if got := statusOf(err); got != tc.want {
				t.Fatalf("status %d (%v), want %d", got, err, tc.want)
			}
		})
	}
}

func TestManagementNeedsTheAccessToken(t *testing.T) {
	s, srv, _ := newDouble(t)
	s.AddProject("acme/app")
	bad, _ := gl.NewClient("not-the-token", gl.WithBaseURL(srv.URL), gl.WithoutRetries())
	_, _, err := bad.Users.CreateUserRunner(&gl.CreateUserRunnerOptions{RunnerType: gl.Ptr("instance_type")})
	if statusOf(err) != 401 {
		t.Fatalf("err = %v, want 401", err)
	}
	if len(s.Runners()) != 0 {
		t.Fatal("a runner was created with a wrong token")
	}
}

// TestRunnerLifecycleThroughClientGo: create, verify with the runner's
// token, list per scope, delete by ID and by token.
func TestRunnerLifecycleThroughClientGo(t *testing.T) {
	s, _, c := newDouble(t)
	pid := s.AddProject("acme/app")
	gid := s.AddGroup("acme")
	pr, _, err := c.Users.CreateUserRunner(&gl.CreateUserRunnerOptions{RunnerType: gl.Ptr("project_type"), ProjectID: &pid, Description: gl.Ptr("p1"), TagList: &[]string{"a"}})
	if err != nil {
		t.Fatal(err)
	}
	gr, _, err := c.Users.CreateUserRunner(&gl.CreateUserRunnerOptions{RunnerType: gl.Ptr("group_type"), GroupID: &gid, Description: gl.Ptr("g1"), TagList: &[]string{"a"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Runners.VerifyRegisteredRunner(&gl.VerifyRegisteredRunnerOptions{Token: &pr.Token}); err != nil {
		t.Fatalf("verify with the runner's token: %v", err)
	}
	if _, err := c.Runners.VerifyRegisteredRunner(&gl.VerifyRegisteredRunnerOptions{Token: gl.Ptr("glrt-nope")}); statusOf(err) != 403 {
		t.Fatalf("verify with a wrong token: %v, want 403", err)
	}
	typ := "project_type"
	ps, _, err := c.Runners.ListProjectRunners("acme/app", &gl.ListProjectRunnersOptions{Type: &typ})
	if err != nil || len(ps) != 1 || ps[0].Description != "p1" || ps[0].RunnerType != "project_type" || !ps[0].Online {
		t.Fatalf("project runners = %+v, %v", ps, err)
	}
	gs, _, err := c.Runners.ListGroupsRunners(gid, &gl.ListGroupsRunnersOptions{Type: gl.Ptr("group_type")})
	if err != nil || len(gs) != 1 || gs[0].ID != gr.ID {
		t.Fatalf("group runners = %+v, %v", gs, err)
	}
	if _, err := c.Runners.RemoveRunner(pr.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Runners.RemoveRunner(pr.ID); !errors.Is(err, gl.ErrNotFound) {
		t.Fatalf("second removal: %v, want 404", err)
	}
	if _, err := c.Runners.DeleteRegisteredRunner(&gl.DeleteRegisteredRunnerOptions{Token: &gr.Token}); err != nil {
		t.Fatalf("delete by token: %v", err)
	}
	if _, err := c.Runners.DeleteRegisteredRunner(&gl.DeleteRegisteredRunnerOptions{Token: &gr.Token}); statusOf(err) != 403 {
		t.Fatalf("delete by a gone token: %v, want 403", err)
	}
	if n := len(s.Runners()); n != 0 {
		t.Fatalf("%d runners left", n)
	}
}

func TestPendingJobsAndPagination(t *testing.T) {
	s, _, c := newDouble(t)
	s.AddProject("acme/app")
	for i := 0; i < 25; i++ {
		s.AddJob("acme/app", "build", []string{"linux"}, "true")
	}
	scope := []gl.BuildStateValue{gl.Pending}
	js, resp, err := c.Jobs.ListProjectJobs("acme/app", &gl.ListJobsOptions{Scope: &scope, ListOptions: gl.ListOptions{PerPage: 20}})
	if err != nil || len(js) != 20 || resp.NextPage != 2 || resp.TotalItems != 25 {
		t.Fatalf("page 1: %d jobs, next %d, total %d, %v", len(js), resp.NextPage, resp.TotalItems, err)
	}
	if js[0].ID < js[1].ID || js[0].TagList[0] != "linux" || js[0].Status != "pending" {
		t.Fatalf("jobs not newest first with tags: %+v", js[0])
	}
	js, resp, err = c.Jobs.ListProjectJobs("acme/app", &gl.ListJobsOptions{Scope: &scope, ListOptions: gl.ListOptions{PerPage: 20, Page: 2}})
	if err != nil || len(js) != 5 || resp.NextPage != 0 {
		t.Fatalf("page 2: %d jobs, next %d, %v", len(js), resp.NextPage, err)
	}
	running := []gl.BuildStateValue{gl.Running}
	if js, _, _ := c.Jobs.ListProjectJobs("acme/app", &gl.ListJobsOptions{Scope: &running}); len(js) != 0 {
		t.Fatalf("running jobs: %d", len(js))
	}
}

// TestJobProtocol: a runner gets only jobs it may run, as GitLab matches
// them, and reports one through log patches and updates.
func TestJobProtocol(t *testing.T) {
	s, srv, c := newDouble(t)
	s.AddProject("acme/sub/app")
	s.AddProject("other/app")
	gid := s.AddGroup("acme")
	gpu := s.AddJob("acme/sub/app", "gpu", []string{"gpu"}, "true")
	untagged := s.AddJob("acme/sub/app", "plain", nil, "true")
	foreign := s.AddJob("other/app", "foreign", []string{"linux"}, "true")
	want := s.AddJob("acme/sub/app", "build", []string{"linux"}, "echo hi")
	r, _, err := c.Users.CreateUserRunner(&gl.CreateUserRunnerOptions{
		RunnerType: gl.Ptr("group_type"), GroupID: &gid, TagList: &[]string{"linux", "big"}, RunUntagged: gl.Ptr(false),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	rc := &RunnerClient{URL: srv.URL, Token: r.Token}
	if id, err := rc.Verify(ctx); err != nil || id != r.ID {
		t.Fatalf("verify = %d, %v", id, err)
	}
	job, err := rc.RequestJob(ctx, nil)
	if err != nil || job == nil || job.ID != want {
		t.Fatalf("request job = %+v, %v; want job %d (not gpu %d, untagged %d, foreign %d)", job, err, want, gpu, untagged, foreign)
	}
	if again, err := rc.RequestJob(ctx, nil); err != nil || again != nil {
		t.Fatalf("second request = %+v, %v, want none", again, err)
	}
	if job.Steps[0].Script[0] != "echo hi" || job.JobInfo.ProjectName != "app" {
		t.Fatalf("job payload = %+v", job)
	}
	// As GitLab's BuildRunnerPresenter: the pipeline's persistent ref,
	// then the branch.
	if wantSpecs := []string{fmt.Sprintf("+refs/pipelines/%d:refs/pipelines/%d", job.ID, job.ID), "+refs/heads/main:refs/remotes/origin/main"}; !slices.Equal(job.GitInfo.Refspecs, wantSpecs) {
		t.Fatalf("refspecs %q, want %q", job.GitInfo.Refspecs, wantSpecs)
	}
	// A job update names its state: GitLab's UpdateBuildStateService
	// answers 400 to any but running, success and failed, none included.
	for _, state := range []string{"", "canceled"} {
		if code, err := rc.UpdateJob(ctx, job.ID, job.Token, state, 0, nil); code != http.StatusBadRequest {
			t.Errorf("update with state %q: %d, %v; want 400", state, code, err)
		}
	}
	// A job GitLab does not know is 403 too, not 404: a runner still
	// running it then ends it.
	if _, err := rc.UpdateJob(ctx, job.ID+1000, job.Token, "running", 0, nil); !errors.Is(err, ErrForbidden) {
		t.Errorf("update of an unknown job: %v, want 403", err)
	}
	if _, err := rc.UpdateJob(ctx, job.ID, job.Token, "running", 0, nil); err != nil {
		t.Fatal(err)
	}
	n, err := rc.PatchTrace(ctx, job.ID, job.Token, 0, []byte("hello\n"))
	if err != nil || n != 6 {
		t.Fatalf("patch = %d, %v", n, err)
	}
	if n, err := rc.PatchTrace(ctx, job.ID, job.Token, 3, []byte("x")); err == nil || n != 6 {
		t.Fatalf("patch at a wrong offset = %d, %v; want 416 with range 0-6", n, err)
	}
	if code, err := rc.UpdateJob(ctx, job.ID, job.Token, "success", 0, []byte("hello\nmore\n")); err != nil || code != http.StatusAccepted {
		t.Fatalf("final update with log missing = %d, %v, want 202", code, err)
	}
	if code, err := rc.UpdateJob(ctx, job.ID, job.Token, "success", 0, []byte("hello\n")); err != nil || code != http.StatusOK {
		t.Fatalf("final update = %d, %v", code, err)
	}
	if _, err := rc.PatchTrace(ctx, job.ID, job.Token, 6, []byte("late")); !errors.Is(err, ErrForbidden) {
		t.Fatalf("patch after the end: %v, want 403", err)
	}
	jobs := s.Jobs()
	if j := jobs[want]; j.Status != "success" || string(j.Trace) != "hello\n" || j.RunnerID != r.ID {
		t.Fatalf("job = %+v", j)
	}
	for _, id := range []int64{gpu, untagged, foreign} {
		if jobs[id].Status != "pending" {
			t.Errorf("job %d taken by a runner that may not run it", id)
		}
	}
	wrong := &RunnerClient{URL: srv.URL, Token: "glrt-wrong"}
	if _, err := wrong.RequestJob(ctx, nil); !errors.Is(err, ErrForbidden) {
		t.Fatalf("request with a wrong token: %v", err)
	}
}

func TestUntaggedJobNeedsRunUntaggedAndTokensExpire(t *testing.T) {
	s, srv, c := newDouble(t)
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	s.Now = func() time.Time { return now }
	s.TokenLifetime = time.Hour
	s.AddProject("acme/app")
	j := s.AddJob("acme/app", "plain", nil, "true")
	r, _, err := c.Users.CreateUserRunner(&gl.CreateUserRunnerOptions{RunnerType: gl.Ptr("instance_type"), RunUntagged: gl.Ptr(true)})
	if err != nil || r.TokenExpiresAt == nil || !r.TokenExpiresAt.Equal(now.Add(time.Hour)) {
		t.Fatalf("runner = %+v, %v", r, err)
	}
	now = now.Add(2 * time.Hour)
	rc := &RunnerClient{URL: srv.URL, Token: r.Token}
	if _, err := rc.RequestJob(context.Background(), nil); !errors.Is(err, ErrForbidden) {
		t.Fatalf("an expired token got: %v", err)
	}
	if s.Jobs()[j].Status != "pending" {
		t.Fatal("job taken with an expired token")
	}
}

func TestFaults(t *testing.T) {
	s, _, c := newDouble(t)
	s.AddProject("acme/app")
	s.Inject(Fault{Method: "POST", Path: "/user/runners", Status: 502, After: true, Times: 1})
	if _, _, err := c.Users.CreateUserRunner(&gl.CreateUserRunnerOptions{RunnerType: gl.Ptr("instance_type"), TagList: &[]string{"x"}}); statusOf(err) != 502 {
		t.Fatalf("err = %v, want 502", err)
	}
	if len(s.Runners()) != 1 {
		t.Fatal("an After fault must still carry the request out")
	}
	s.Inject(Fault{Path: "/projects", Status: 429, Times: 1})
	if _, _, err := c.Projects.GetProject("acme/app", nil); statusOf(err) != 429 {
		t.Fatalf("err = %v, want 429", err)
	}
	if _, _, err := c.Projects.GetProject("acme/app", nil); err != nil {
		t.Fatalf("the fault should be used up: %v", err)
	}
}

// TestJobHooksAreDeliveredInOrder: every status change of a job reaches
// the hook with the secret, as GitLab's job events do.
func TestJobHooksAreDeliveredInOrder(t *testing.T) {
	s, srv, c := newDouble(t)
	got := make(chan string, 10)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ev, err := gl.ParseWebhook(gl.HookEventType(r), mustRead(r))
		je, ok := ev.(*gl.JobEvent)
		if err != nil || !ok || r.Header.Get("X-Gitlab-Token") != "s3cret" {
			w.WriteHeader(400)
			return
		}
		select { // past got's room, a delivery waits for its end, never the test's
		case got <- je.BuildStatus:
		case <-r.Context().Done():
			return
		}
		w.WriteHeader(204)
	}))
	defer hook.Close()
	s.SetHook(hook.URL, "s3cret", hook.Client())
	defer s.Close()
	s.AddProject("acme/app")
	s.AddJob("acme/app", "build", []string{"a"}, "true")
	r, _, _ := c.Users.CreateUserRunner(&gl.CreateUserRunnerOptions{RunnerType: gl.Ptr("instance_type"), TagList: &[]string{"a"}})
	rc := &RunnerClient{URL: srv.URL, Token: r.Token}
	job, err := rc.RequestJob(context.Background(), nil)
	if err != nil || job == nil {
		t.Fatal(err)
	}
	if _, err := rc.UpdateJob(context.Background(), job.ID, job.Token, "failed", 1, nil); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"pending", "running", "failed"} {
		select {
		case st := <-got:
			if st != want {
				t.Fatalf("hook status %q, want %q", st, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no %s hook", want)
		}
	}
}

func mustRead(r *http.Request) []byte {
	b, _ := io.ReadAll(r.Body)
	return b
}

// TestDeletedRunnersTokenTakesNoJobButItsJobFinishes holds the double to
// GitLab: POST /jobs/request finds the runner by its token, so a deleted
// runner's token is refused (403); job updates and trace appends are
// authenticated by the job's token alone and go on (GitLab's
// authenticate_job! does not look at the runner).
func TestDeletedRunnersTokenTakesNoJobButItsJobFinishes(t *testing.T) {
	s, srv, c := newDouble(t)
	pid := s.AddProject("acme/app")
	first := s.AddJob("acme/app", "first", []string{"a"}, "true")
	second := s.AddJob("acme/app", "second", []string{"a"}, "true")
	r, _, err := c.Users.CreateUserRunner(&gl.CreateUserRunnerOptions{RunnerType: gl.Ptr("project_type"), ProjectID: &pid, TagList: &[]string{"a"}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	rc := &RunnerClient{URL: srv.URL, Token: r.Token, SystemID: "s_1"}
	job, err := rc.RequestJob(ctx, nil)
	if err != nil || job == nil || job.ID != first {
		t.Fatalf("the runner's job: %+v, %v", job, err)
	}
	if _, err := c.Runners.RemoveRunner(r.ID); err != nil {
		t.Fatal(err)
	}
	if got, err := rc.RequestJob(ctx, nil); !errors.Is(err, ErrForbidden) {
		t.Fatalf("a deleted runner's token asking for a job: %+v, %v; want 403", got, err)
	}
	if _, ok := s.Deleted()[r.ID]; !ok {
		t.Error("the deletion is not recorded")
	}
	if n, err := rc.PatchTrace(ctx, job.ID, job.Token, 0, []byte("ok\n")); err != nil || n != 3 {
		t.Fatalf("trace after the deletion: %d, %v", n, err)
	}
	if code, err := rc.UpdateJob(ctx, job.ID, job.Token, "success", 0, []byte("ok\n")); err != nil || code != 200 {
		t.Fatalf("final update after the deletion: %d, %v", code, err)
	}
	jobs := s.Jobs()
	if jobs[first].Status != "success" || jobs[second].Status != "pending" {
		t.Fatalf("jobs: first %s, second %s; want success, pending", jobs[first].Status, jobs[second].Status)
	}
}
