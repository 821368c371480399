package gitlab

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/forge"
	"github.com/nixos-fireactions/nixos-fireactions/internal/double/gitlabdouble"
)

// changes collects what a scope tells (forge.QueueNotifier).
type changes struct {
	mu  sync.Mutex
	got []forge.QueueChange
}

func (c *changes) add(q forge.QueueChange) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.got = append(c.got, q)
}

func (c *changes) take() []forge.QueueChange {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.got
	c.got = nil
	return out
}

// TestWebhookIsAnsweredBeforeTheSlowLookup: GitLab takes 1.5 s to answer
// the pending job's lookup; the delivery is answered in under 100 ms all
// the same, and the job becomes demand (kick) once the lookup is done.
func TestWebhookIsAnsweredBeforeTheSlowLookup(t *testing.T) {
	e := newEnv(t, Scope{Kind: ScopeGroup, Path: "acme"})
	if id := e.gl.AddJob("acme/app", "unit-tests", []string{"linux", "x86_64"}, "true"); id != 7 {
		t.Fatalf("job id %d: the testdata payload names job 7 of project 2", id)
	}
	e.gl.Inject(gitlabdouble.Fault{Method: http.MethodGet, Path: "/projects/2/jobs/7", Delay: 1500 * time.Millisecond})
	req := httptest.NewRequest(http.MethodPost, "/webhooks/gitlab", bytes.NewReader(readTestdata(t, "job-hook-pending.json")))
	req.Header.Set("X-Gitlab-Event", "Job Hook")
	req.Header.Set("X-Gitlab-Token", "hook-secret")
	w := httptest.NewRecorder()
	kicked := make(chan struct{}, 1)
	start := time.Now()
	e.f.d.ServeWebhook(w, req, func() { kicked <- struct{}{} })
	took := time.Since(start)
	if w.Code != http.StatusNoContent || took >= 100*time.Millisecond {
		t.Fatalf("delivery answered %d after %s, want 204 in < 100ms", w.Code, took)
	}
	t.Logf("answered in %s while the lookup takes 1.5s", took)
	select {
	case <-kicked:
		t.Fatal("kicked before the lookup answered")
	default:
	}
	select {
	case <-kicked:
	case <-time.After(5 * time.Second):
		t.Fatal("no kick after the lookup")
	}
	e.f.d.inFlight.Wait()
	js, err := e.f.QueuedJobs(context.Background())
	if err != nil || !slices.Contains(jobIDs(js), "7") {
		t.Fatalf("queued = %v, %v", jobIDs(js), err)
	}
}

// TestJobHooksAreToldOncePerForge: two scopes of one GitLab that both
// cover the job's project, both listening: one lookup for the delivery,
// each scope told the job joined (with its tags) and then left, and no
// kick.
func TestJobHooksAreToldOncePerForge(t *testing.T) {
	e := newEnv(t, Scope{Kind: ScopeGroup, Path: "acme"})
	other, err := e.f.d.Scope(ScopeOptions{Scope: Scope{Kind: ScopeInstance}, Pool: "all"})
	if err != nil {
		t.Fatal(err)
	}
	var a, b changes
	e.f.NotifyQueue(a.add)
	other.NotifyQueue(b.add)
	e.gl.AddJob("acme/app", "unit-tests", []string{"linux", "x86_64"}, "true")
	code, kicked := delivery(e.f, "Job Hook", "hook-secret", "uuid-1", readTestdata(t, "job-hook-pending.json"))
	if code != http.StatusNoContent || kicked {
		t.Fatalf("pending hook: %d, kicked %v (listening scopes are told, not kicked)", code, kicked)
	}
	lookups := 0
	for _, c := range e.gl.Calls() {
		if c == "GET /api/v4/projects/2/jobs/7" {
			lookups++
		}
	}
	if lookups != 1 {
		t.Fatalf("%d lookups of job 7 for one delivery to two scopes", lookups)
	}
	for name, c := range map[string]*changes{"group": &a, "instance": &b} {
		got := c.take()
		if len(got) != 1 || !got[0].Queued || got[0].Job.ID != "7" || !slices.Equal(got[0].Job.Labels, []string{"linux", "x86_64"}) {
			t.Fatalf("%s scope told %+v", name, got)
		}
	}
	if _, kicked := delivery(e.f, "Job Hook", "hook-secret", "uuid-2", readTestdata(t, "job-hook-running.json")); kicked {
		t.Fatal("the running hook kicked a listening scope")
	}
	for name, c := range map[string]*changes{"group": &a, "instance": &b} {
		if got := c.take(); len(got) != 1 || got[0].Queued || got[0].Job.ID != "7" {
			t.Fatalf("%s scope told %+v after the running hook", name, got)
		}
	}
}

// TestPollsTellTheQueue: a poll tells the jobs it finds and those gone
// since, each once.
func TestPollsTellTheQueue(t *testing.T) {
	e := newEnv(t, Scope{Kind: ScopeProject, Path: "acme/app"})
	var c changes
	e.f.NotifyQueue(c.add)
	id := e.gl.AddJob("acme/app", "build", []string{"linux"}, "true")
	ctx := context.Background()
	if _, err := e.f.QueuedJobs(ctx); err != nil {
		t.Fatal(err)
	}
	if got := c.take(); len(got) != 1 || !got[0].Queued || got[0].Job.ID != ids(id)[0] {
		t.Fatalf("first poll told %+v", got)
	}
	if _, err := e.f.QueuedJobs(ctx); err != nil {
		t.Fatal(err)
	}
	if got := c.take(); len(got) != 0 {
		t.Fatalf("an unchanged poll told %+v", got)
	}
	e.gl.SetJobStatus(id, "running")
	if _, err := e.f.QueuedJobs(ctx); err != nil {
		t.Fatal(err)
	}
	if got := c.take(); len(got) != 1 || got[0].Queued || got[0].Job.ID != ids(id)[0] {
		t.Fatalf("poll after the job started told %+v", got)
	}
}

// TestATakenJobIsToldGone: once the pool learns which job its runner
// took (LearnJob, at job start), the scope tells that job left the queue,
// before any poll or webhook says so.
func TestATakenJobIsToldGone(t *testing.T) {
	e := newEnv(t, Scope{Kind: ScopeProject, Path: "acme/app"})
	var c changes
	e.f.NotifyQueue(c.add)
	id := e.gl.AddJob("acme/app", "build", []string{"linux"}, "true")
	if _, err := e.f.QueuedJobs(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := c.take(); len(got) != 1 || !got[0].Queued {
		t.Fatalf("poll told %+v", got)
	}
	tk := e.take(t, "fa-1", nil)
	if tk.job.ID != id {
		t.Fatalf("took job %d, want %d", tk.job.ID, id)
	}
	if _, err := e.f.LearnJob(context.Background(), tk.ref); err != nil {
		t.Fatal(err)
	}
	if got := c.take(); len(got) != 1 || got[0].Queued || got[0].Job.ID != ids(id)[0] {
		t.Fatalf("after LearnJob told %+v, want job %d gone", got, id)
	}
}
