package github_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/forge"
	"github.com/nixos-fireactions/nixos-fireactions/forge/github"
	"github.com/nixos-fireactions/nixos-fireactions/internal/double/githubdouble"
)

// unwrapping is a pool behind a wrapper, as the metrics wrap it.
type unwrapping struct{ forge.Forge }

func (u unwrapping) Unwrap() forge.Forge { return u.Forge }

// TestRetainDropsThePoolsNotInUse: the Client is the forge's driver; the
// pools a reload asked for and did not use (Retain, through wrappers)
// take no more deliveries nor spell the forge's labels, and with none
// left its webhooks answer 404.
func TestRetainDropsThePoolsNotInUse(t *testing.T) {
	c, err := github.New(github.Options{Name: "gh", URL: "http://127.0.0.1:1", Token: "ghp_x", WebhookSecret: hookSecret,
		PollInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if c.Name() != "gh" || c.Kind() != "github" {
		t.Fatalf("driver %q of kind %q", c.Name(), c.Kind())
	}
	hello := github.Scope{Kind: "repo", Owner: "Codertocat", Repo: "Hello-World"}
	// The running pool, and the same pool as a reload respelled its label.
	if _, err := c.Pool(github.PoolOptions{Scope: hello, Labels: []string{"UBUNTU-LATEST"}}); err != nil {
		t.Fatal(err)
	}
	respelled, err := c.Pool(github.PoolOptions{Scope: hello, Labels: []string{"Ubuntu-Latest"}})
	if err != nil {
		t.Fatal(err)
	}
	var told []forge.QueueChange
	respelled.NotifyQueue(func(ch forge.QueueChange) { told = append(told, ch) })
	payload := string(examplePayloads(t)[helloQueued])
	deliver := func(id string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(http.MethodPost, "/webhooks/gh", strings.NewReader(payload))
		r.Header.Set("X-GitHub-Event", "workflow_job")
		r.Header.Set("X-GitHub-Delivery", id)
		r.Header.Set("X-Hub-Signature-256", githubdouble.SignPayload(hookSecret, []byte(payload)))
		w := httptest.NewRecorder()
		c.ServeWebhook(w, r, func() {})
		return w
	}
	c.Retain([]forge.Forge{unwrapping{respelled}})
	if w := deliver("d-1"); w.Code != http.StatusOK || !strings.Contains(w.Body.String(), "queue changed") {
		t.Fatalf("a job of the pool kept: %d %s", w.Code, w.Body)
	}
	if len(told) != 1 || strings.Join(told[0].Job.Labels, ",") != "Ubuntu-Latest" {
		t.Fatalf("the pool kept was told %+v, want the job with its labels spelled Ubuntu-Latest", told)
	}
	c.Retain(nil)
	if w := deliver("d-2"); w.Code != http.StatusNotFound {
		t.Fatalf("a delivery to a forge without pools: %d %s", w.Code, w.Body)
	}
}
