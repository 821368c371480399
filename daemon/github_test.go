package daemon

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/config"
	"github.com/nixos-fireactions/nixos-fireactions/internal/double/githubdouble"
	"github.com/nixos-fireactions/nixos-fireactions/metrics"
)

// github pools get their scopes from the one driver of their forge, and
// share its queue: a delivery to the forge is demand for each pool whose
// scope covers the job.
func TestGitHubPoolsShareTheirForge(t *testing.T) {
	spec, err := githubdouble.LoadSpec("../forge/github/testdata/github-actions-runners.openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	d := githubdouble.New(githubdouble.Options{Spec: spec, PATs: []string{"ghp_cli"}})
	srv := httptest.NewServer(d)
	t.Cleanup(srv.Close)
	fc := config.Forge{Name: "gh", Type: "github", URL: srv.URL, Token: "ghp_cli", WebhookSecret: "s", PollInterval: time.Hour}
	pool := func(name, scope string) config.Pool {
		return config.Pool{Name: name, Forge: "gh", Scope: scope, Labels: []string{"linux", "self-hosted"}}
	}
	cfg := &config.Config{Forges: []config.Forge{fc}, Pools: []config.Pool{pool("a", "repo:acme/one"), pool("b", "org:acme")}}
	drivers, forges, err := connectForges(cfg, "dev")
	if err != nil {
		t.Fatal(err)
	}
	if forges["a"].Kind() != "github" || forges["b"].Kind() != "github" {
		t.Fatalf("drivers: %s, %s", forges["a"].Kind(), forges["b"].Kind())
	}
	recv, ok := drivers.webhooks(metrics.New(t.TempDir()))["gh"]
	if !ok {
		t.Fatal("the github driver takes no webhooks")
	}
	body := `{"action":"queued","workflow_job":{"id":7,"run_id":1,"status":"queued","labels":["linux"]},` +
		`"repository":{"full_name":"acme/two","owner":{"login":"acme"}}}`
	r := httptest.NewRequest(http.MethodPost, "/webhooks/gh", strings.NewReader(body))
	r.Header.Set("X-GitHub-Event", "workflow_job")
	r.Header.Set("X-Hub-Signature-256", githubdouble.SignPayload("s", []byte(body)))
	w := httptest.NewRecorder()
	recv.ServeWebhook(w, r, func() {})
	if w.Code != http.StatusOK {
		t.Fatalf("delivery: %d %s", w.Code, w.Body)
	}
	jobs, err := forges["b"].QueuedJobs(t.Context())
	if err != nil || len(jobs) != 1 || jobs[0].ID != "7" {
		t.Fatalf("the org pool's queue = %+v, %v", jobs, err)
	}
	if jobs, _ := forges["a"].QueuedJobs(t.Context()); len(jobs) != 0 {
		t.Fatalf("the acme/one pool took acme/two's job: %+v", jobs)
	}
	for _, v := range d.Violations() {
		t.Errorf("violation: %s", v)
	}
}
