package gitlab

import (
	"context"
	"errors"
	"net/http"
	"testing"

	"github.com/nixos-fireactions/nixos-fireactions/internal/double/gitlabdouble"
)

// TestRetireStopsTheTokenTakingJobsButNotTheRunningJob: a job can read
// its runner's glrt- token (it runs as the runner's user). Once the pool
// retires the runner, the token takes no other job (403 on POST
// /jobs/request, as GitLab answers for a deleted runner), while the job
// it took still updates and finishes with its job token.
func TestRetireStopsTheTokenTakingJobsButNotTheRunningJob(t *testing.T) {
	e := newEnv(t, Scope{Kind: ScopeProject, Path: "acme/app"})
	first := e.gl.AddJob("acme/app", "first", []string{"linux"}, "true")
	second := e.gl.AddJob("acme/app", "second", []string{"linux"}, "true")
	r := e.register(t, "fa-h-1", "linux")
	tok := onlyRunner(t, e.gl).Token
	runner := &gitlabdouble.RunnerClient{URL: e.srv.URL, Token: tok, SystemID: "s_1"}
	ctx := context.Background()
	job, err := runner.RequestJob(ctx, nil)
	if err != nil || job == nil || job.ID != first {
		t.Fatalf("the runner's one job: %+v, %v", job, err)
	}

	if err := e.f.Retire(ctx, r.RunnerRef); err != nil {
		t.Fatal(err)
	}
	thief := &gitlabdouble.RunnerClient{URL: e.srv.URL, Token: tok, SystemID: "s_job"}
	if stolen, err := thief.RequestJob(ctx, nil); !errors.Is(err, gitlabdouble.ErrForbidden) {
		t.Fatalf("the retired runner's token asking for a job: %+v, %v; want 403", stolen, err)
	}
	if st := e.gl.Jobs()[second].Status; st != "pending" {
		t.Fatalf("the other job is %s, want pending", st)
	}
	if n, err := runner.PatchTrace(ctx, job.ID, job.Token, 0, []byte("log\n")); err != nil || n != 4 {
		t.Fatalf("trace of the running job after the retirement: log now %d bytes, %v", n, err)
	}
	if code, err := runner.UpdateJob(ctx, job.ID, job.Token, "success", 0, []byte("log\n")); err != nil || code != http.StatusOK {
		t.Fatalf("final update of the running job after the retirement: %d, %v", code, err)
	}
	if st := e.gl.Jobs()[first].Status; st != "success" {
		t.Fatalf("the running job ended %s, want success", st)
	}
	// Retiring again, or removing at the VM's end, is not an error.
	if err := e.f.Retire(ctx, r.RunnerRef); err != nil {
		t.Fatalf("retire a gone runner: %v", err)
	}
	if err := e.f.Remove(ctx, r.RunnerRef); err != nil {
		t.Fatalf("remove a retired runner: %v", err)
	}
}
