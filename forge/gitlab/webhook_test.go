package gitlab

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"sort"
	"sync/atomic"
	"testing"
	"time"

	gl "gitlab.com/gitlab-org/api/client-go/v2"

	"github.com/nixos-fireactions/nixos-fireactions/forge"
)

// delivery posts a webhook to the driver and returns the status and
// whether it kicked the pools.
func delivery(f *Forge, event, token, uuid string, body []byte) (int, bool) {
	code, kicked := deliverNoWait(f, event, token, uuid, body)
	f.d.inFlight.Wait() // the lookups that follow the answer
	return code, kicked.Load()
}

// deliverNoWait hands the driver a delivery and returns once it is
// answered, its lookups possibly still in flight.
func deliverNoWait(f *Forge, event, token, uuid string, body []byte) (int, *atomic.Bool) {
	req := httptest.NewRequest(http.MethodPost, "/webhooks/gitlab", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if event != "" {
		req.Header.Set("X-Gitlab-Event", event)
	}
	if token != "" {
		req.Header.Set("X-Gitlab-Token", token)
	}
	if uuid != "" {
		req.Header.Set("X-Gitlab-Event-UUID", uuid)
	}
	w := httptest.NewRecorder()
	var kicked atomic.Bool
	f.d.ServeWebhook(w, req, func() { kicked.Store(true) })
	return w.Code, &kicked
}

func readTestdata(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestDocumentedJobHookPayloadsParse: Job Hook payloads shaped as GitLab
// documents job events parse with client-go's webhook parser.
func TestDocumentedJobHookPayloadsParse(t *testing.T) {
	for _, tc := range []struct {
		file, status string
		runnerTags   []string
		finished     string
	}{
		{"job-hook-pending.json", "pending", nil, ""},
		{"job-hook-running.json", "running", []string{"linux", "x86_64"}, ""},
		{"job-hook-success.json", "success", []string{"linux", "x86_64"}, "2026-03-02 09:15:02 UTC"},
	} {
		t.Run(tc.status, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodPost, "/", nil)
			req.Header.Set("X-Gitlab-Event", "Job Hook")
			if gl.HookEventType(req) != gl.EventTypeJob {
				t.Fatalf("event type %q", gl.HookEventType(req))
			}
			ev, err := gl.ParseWebhook(gl.HookEventType(req), readTestdata(t, tc.file))
			if err != nil {
				t.Fatal(err)
			}
			j, ok := ev.(*gl.JobEvent)
			if !ok {
				t.Fatalf("parsed to %T", ev)
			}
			if j.ObjectKind != "build" || j.BuildID != 7 || j.BuildStatus != tc.status || j.ProjectID != 2 ||
				j.Project.PathWithNamespace != "acme/app" || !slices.Equal(j.Runner.Tags, tc.runnerTags) ||
				j.BuildFinishedAt != tc.finished || j.BuildCreatedAt != "2026-03-02 09:14:05 UTC" {
				t.Fatalf("event = %+v", j)
			}
		})
	}
}

// TestDoublesJobHookHasTheDocumentedShape holds the double's payloads to
// the documented ones: the same keys, in the payload and its objects.
func TestDoublesJobHookHasTheDocumentedShape(t *testing.T) {
	e := newEnv(t, Scope{Kind: ScopeProject, Path: "acme/app"})
	id := e.gl.AddJob("acme/app", "unit-tests", []string{"linux"}, "true")
	keys := func(b []byte) map[string][]string {
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		out := map[string][]string{}
		for k, v := range m {
			out[""] = append(out[""], k)
			if sub, ok := v.(map[string]any); ok {
				for sk := range sub {
					out[k] = append(out[k], sk)
				}
			}
		}
		for _, v := range out {
			sort.Strings(v)
		}
		return out
	}
	got, want := keys(e.gl.JobHook(id)), keys(readTestdata(t, "job-hook-pending.json"))
	for k, w := range want {
		if !slices.Equal(got[k], w) {
			t.Errorf("keys of %q: double %v, documented %v", k, got[k], w)
		}
	}
}

// TestWebhookTokenIsChecked: a delivery without the secret is refused.
func TestWebhookTokenIsChecked(t *testing.T) {
	e := newEnv(t, Scope{Kind: ScopeProject, Path: "acme/app"})
	body := readTestdata(t, "job-hook-pending.json")
	for _, tok := range []string{"", "wrong", "hook-secre", "hook-secret2"} {
		if code, kicked := delivery(e.f, "Job Hook", tok, "", body); code != http.StatusUnauthorized || kicked {
			t.Errorf("token %q: %d, kicked %v", tok, code, kicked)
		}
	}
	noSecret := newEnv(t, Scope{Kind: ScopeProject, Path: "acme/app"}, func(o *Options) { o.WebhookSecret = "" })
	if code, _ := delivery(noSecret.f, "Job Hook", "", "", body); code != http.StatusUnauthorized {
		t.Errorf("with no secret configured: %d", code)
	}
	if code, kicked := delivery(e.f, "Push Hook", "hook-secret", "", []byte(`{"object_kind":"push"}`)); code != http.StatusNoContent || kicked {
		t.Errorf("push event: %d, kicked %v", code, kicked)
	}
	if code, _ := delivery(e.f, "Job Hook", "hook-secret", "", []byte(`{"object_kind":`)); code != http.StatusBadRequest {
		t.Errorf("broken payload: %d", code)
	}
}

// TestPendingJobHookIsDemandUntilItRuns: the documented pending payload
// makes the job queued demand (its tags looked up), a duplicate delivery
// is ignored, and the running payload ends the demand.
func TestPendingJobHookIsDemandUntilItRuns(t *testing.T) {
	// A group scope polled before the job came, and not again within
	// widePollEvery: job 7 of acme/app (ID 2) is known from the webhook
	// alone.
	now := time.Now()
	e := newEnv(t, Scope{Kind: ScopeGroup, Path: "acme"}, func(o *Options) { o.Now = func() time.Time { return now } })
	ctx := context.Background()
	if _, err := e.f.QueuedJobs(ctx); err != nil {
		t.Fatal(err)
	}
	now = now.Add(time.Second)
	if id := e.gl.AddJob("acme/app", "unit-tests", []string{"linux", "x86_64"}, "true"); id != 7 {
		t.Fatalf("job id %d: the testdata payload names job 7 of project 2", id)
	}
	before, _ := e.f.QueuedJobs(ctx)
	if slices.Contains(jobIDs(before), "7") {
		t.Fatalf("job 7 listed by a cached poll that predates it: %v", jobIDs(before))
	}
	code, kicked := delivery(e.f, "Job Hook", "hook-secret", "uuid-1", readTestdata(t, "job-hook-pending.json"))
	if code != http.StatusNoContent || !kicked {
		t.Fatalf("pending hook: %d, kicked %v", code, kicked)
	}
	if _, kicked := delivery(e.f, "Job Hook", "hook-secret", "uuid-1", readTestdata(t, "job-hook-pending.json")); kicked {
		t.Fatal("a redelivery kicked again")
	}
	js, err := e.f.QueuedJobs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(js, func(j forge.Job) bool { return j.ID == "7" })
	if i < 0 || !slices.Equal(js[i].Labels, []string{"linux", "x86_64"}) || js[i].Repo != "acme/app" {
		t.Fatalf("queued after the hook = %+v", js)
	}
	if _, kicked := delivery(e.f, "Job Hook", "hook-secret", "uuid-2", readTestdata(t, "job-hook-running.json")); !kicked {
		t.Fatal("the running hook did not kick")
	}
	js, _ = e.f.QueuedJobs(ctx)
	if slices.Contains(jobIDs(js), "7") {
		t.Fatalf("job 7 still queued after its running hook: %v", jobIDs(js))
	}
}

func TestJobHookOutsideTheScopeIsIgnored(t *testing.T) {
	e := newEnv(t, Scope{Kind: ScopeGroup, Path: "other"})
	e.gl.AddJob("acme/app", "unit-tests", []string{"linux"}, "true")
	if code, kicked := delivery(e.f, "Job Hook", "hook-secret", "", readTestdata(t, "job-hook-pending.json")); code != http.StatusNoContent || kicked {
		t.Fatalf("hook of another group's project: %d, kicked %v", code, kicked)
	}
	if slices.Contains(e.gl.Calls(), "GET /api/v4/projects/2/jobs/7") {
		t.Fatal("looked up a job outside the scope")
	}
}

// TestLeaveDuringLookupWins: the lookup of a pending job reads it
// pending, and its answer is slow; meanwhile the job starts and its
// running delivery is handled. The lookup's late answer must not make
// the job demand again: no "queued" is told after the "left", and the
// webhook view does not keep the job.
func TestLeaveDuringLookupWins(t *testing.T) {
	e := newEnv(t, Scope{Kind: ScopeGroup, Path: "acme"})
	if id := e.gl.AddJob("acme/app", "unit-tests", []string{"linux", "x86_64"}, "true"); id != 7 {
		t.Fatalf("job id %d: the testdata payloads name job 7 of project 2", id)
	}
	read, release := make(chan struct{}), make(chan struct{})
	double := e.srv.Config.Handler
	e.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || r.URL.Path != "/api/v4/projects/2/jobs/7" {
			double.ServeHTTP(w, r)
			return
		}
		rec := httptest.NewRecorder()
		double.ServeHTTP(rec, r) // GitLab reads the job while it is pending
		close(read)
		<-release // and its answer is slow to arrive
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		_, _ = w.Write(rec.Body.Bytes())
	})
	var c changes
	e.f.NotifyQueue(c.add)
	if code, _ := deliverNoWait(e.f, "Job Hook", "hook-secret", "uuid-1", readTestdata(t, "job-hook-pending.json")); code != http.StatusNoContent {
		t.Fatalf("pending hook: %d", code)
	}
	select {
	case <-read:
	case <-time.After(5 * time.Second):
		t.Fatal("no lookup of job 7")
	}
	e.gl.SetJobStatus(7, "running")
	if code, _ := deliverNoWait(e.f, "Job Hook", "hook-secret", "uuid-2", readTestdata(t, "job-hook-running.json")); code != http.StatusNoContent {
		t.Fatalf("running hook: %d", code)
	}
	close(release)
	e.f.d.inFlight.Wait()
	for _, ch := range c.take() {
		if ch.Queued {
			t.Fatalf("told job %s queued after its running delivery", ch.Job.ID)
		}
	}
	e.f.mu.Lock()
	_, kept := e.f.hooked[7]
	e.f.mu.Unlock()
	if kept {
		t.Fatal("the webhook view kept job 7 as pending after it started")
	}
}
