package github_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/forge"
	"github.com/nixos-fireactions/nixos-fireactions/forge/github"
	"github.com/nixos-fireactions/nixos-fireactions/internal/double/githubdouble"
)

// A delivery that changes the queue tells the pools that listen
// (forge.QueueNotifier) which job joined or left it, with its labels as
// the configuration spells them, and kicks no full reconcile; a pool
// that does not listen is kicked as before.
func TestDeliveryTellsTheQueueChangeInsteadOfKicking(t *testing.T) {
	payloads := examplePayloads(t)
	c, err := github.New(github.Options{Name: "github", URL: "http://127.0.0.1:1", Token: "ghp_x", WebhookSecret: hookSecret,
		PollInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	p, err := c.Pool(github.PoolOptions{Scope: github.Scope{Kind: "repo", Owner: "Codertocat", Repo: "Hello-World"},
		Labels: []string{"Ubuntu-Latest"}})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var told []forge.QueueChange
	kicks := 0
	deliver := func(i int, id string) {
		t.Helper()
		body := payloads[i]
		r := httptest.NewRequest(http.MethodPost, "/webhooks/github", strings.NewReader(string(body)))
		r.Header.Set("X-GitHub-Event", "workflow_job")
		r.Header.Set("X-GitHub-Delivery", id)
		r.Header.Set("X-Hub-Signature-256", githubdouble.SignPayload(hookSecret, body))
		w := httptest.NewRecorder()
		c.ServeWebhook(w, r, func() { kicks++ })
		if w.Code != http.StatusOK {
			t.Fatalf("delivery %s: %d %s", id, w.Code, w.Body)
		}
	}
	p.NotifyQueue(func(ch forge.QueueChange) {
		mu.Lock()
		defer mu.Unlock()
		told = append(told, ch)
	})
	deliver(helloQueued, "d-1")
	deliver(helloQueued, "d-2") // the same job again: no change
	deliver(helloInProgress, "d-3")
	mu.Lock()
	got := append([]forge.QueueChange(nil), told...)
	mu.Unlock()
	if len(got) != 2 || !got[0].Queued || got[1].Queued || got[0].Job.ID != "289782451" || got[1].Job.ID != "289782451" ||
		strings.Join(got[0].Job.Labels, ",") != "Ubuntu-Latest" || got[0].Job.Repo != "Codertocat/Hello-World" {
		t.Fatalf("told %+v, want job 289782451 queued (labels Ubuntu-Latest) then gone", got)
	}
	if kicks != 0 {
		t.Fatalf("%d kicks for changes the pool was told of", kicks)
	}
	p.NotifyQueue(nil)
	deliver(k8sQueued, "d-4") // another repository: not this pool's
	deliver(helloCompletedOK, "d-5")
	if kicks != 0 {
		t.Fatalf("kicked for a change outside the queue")
	}
	// A job that joins while nobody listens kicks.
	body := strings.Replace(string(payloads[helloQueued]), `"id": 289782451`, `"id": 289782452`, 1)
	r := httptest.NewRequest(http.MethodPost, "/webhooks/github", strings.NewReader(body))
	r.Header.Set("X-GitHub-Event", "workflow_job")
	r.Header.Set("X-GitHub-Delivery", "d-6")
	r.Header.Set("X-Hub-Signature-256", githubdouble.SignPayload(hookSecret, []byte(body)))
	c.ServeWebhook(httptest.NewRecorder(), r, func() { kicks++ })
	if kicks != 1 {
		t.Fatalf("%d kicks for a change nobody was told of, want 1", kicks)
	}
}

// An enterprise pool takes the deliveries that name its enterprise,
// whichever repository they come from, and no others.
func TestEnterpriseDeliveryReachesTheEnterprisePool(t *testing.T) {
	payload := string(examplePayloads(t)[helloQueued])
	c, err := github.New(github.Options{Name: "github", URL: "http://127.0.0.1:1", Token: "ghp_x", WebhookSecret: hookSecret,
		PollInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	p, err := c.Pool(github.PoolOptions{Scope: github.Scope{Kind: "enterprise", Enterprise: "acme-corp"}, Labels: []string{"ubuntu-latest"}})
	if err != nil {
		t.Fatal(err)
	}
	var told []forge.QueueChange
	p.NotifyQueue(func(ch forge.QueueChange) { told = append(told, ch) })
	deliver := func(body, id string) string {
		r := httptest.NewRequest(http.MethodPost, "/webhooks/github", strings.NewReader(body))
		r.Header.Set("X-GitHub-Event", "workflow_job")
		r.Header.Set("X-GitHub-Delivery", id)
		r.Header.Set("X-Hub-Signature-256", githubdouble.SignPayload(hookSecret, []byte(body)))
		w := httptest.NewRecorder()
		c.ServeWebhook(w, r, func() {})
		return w.Body.String()
	}
	if got := deliver(payload, "e-1"); !strings.Contains(got, "not a repository") || len(told) != 0 {
		t.Fatalf("a delivery naming no enterprise: %q, told %v", got, told)
	}
	named := strings.Replace(payload, "{", `{"enterprise": {"slug": "acme-corp", "id": 7},`, 1)
	if got := deliver(named, "e-2"); !strings.Contains(got, "queue changed") || len(told) != 1 || told[0].Job.ID != "289782451" {
		t.Fatalf("a delivery naming the enterprise: %q, told %v", got, told)
	}
}
