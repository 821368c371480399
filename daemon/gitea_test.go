package daemon

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/nixos-fireactions/nixos-fireactions/config"
	"github.com/nixos-fireactions/nixos-fireactions/forge"
	"github.com/nixos-fireactions/nixos-fireactions/internal/double/giteadouble"
	"github.com/nixos-fireactions/nixos-fireactions/metrics"
)

// A gitea forge with webhook_secret_file has its webhook route: a signed
// workflow_job delivery is told to the pools whose scope covers the job.
func TestGiteaForgeTakesItsWebhooks(t *testing.T) {
	g := giteadouble.New()
	srv := giteadouble.Serve(t, g)
	fc := config.Forge{Name: "gt", Type: "gitea", URL: srv.URL, Token: g.APIToken, WebhookSecret: "s"}
	pool := func(name, scope string) config.Pool {
		return config.Pool{Name: name, Forge: "gt", Scope: scope, Labels: []string{"linux"}}
	}
	cfg := &config.Config{Forges: []config.Forge{fc}, Pools: []config.Pool{pool("a", "repo:acme/one"), pool("b", "org:acme")}}
	drivers, forges, err := connectForges(cfg, "dev")
	if err != nil {
		t.Fatal(err)
	}
	recv, ok := drivers.webhooks(metrics.New(t.TempDir()))["gt"]
	if !ok {
		t.Fatal("the gitea driver takes no webhooks")
	}
	told := map[string]int{}
	for _, name := range []string{"a", "b"} {
		n, ok := forge.NotifierOf(forges[name])
		if !ok {
			t.Fatalf("pool %s's scope tells no queue changes", name)
		}
		n.NotifyQueue(func(forge.QueueChange) { told[name]++ })
	}
	dl := giteadouble.Hook{Secret: "s"}.WorkflowJob("d-1", "queued", giteadouble.Job{ID: 7, Labels: []string{"linux"}}, "acme", "two")
	r := httptest.NewRequest(http.MethodPost, "/webhooks/gt", bytes.NewReader(dl.Body))
	r.Header = dl.Header
	w := httptest.NewRecorder()
	recv.ServeWebhook(w, r, func() {})
	if w.Code != http.StatusOK || told["b"] != 1 || told["a"] != 0 {
		t.Fatalf("delivery: %d %s; told %v, want the org pool only", w.Code, w.Body, told)
	}
}
