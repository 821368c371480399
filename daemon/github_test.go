package daemon

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/config"
	"github.com/nixos-fireactions/nixos-fireactions/forge"
	"github.com/nixos-fireactions/nixos-fireactions/internal/double/githubdouble"
	"github.com/nixos-fireactions/nixos-fireactions/metrics"
)

// github pools get their scopes from the one driver of their forge, and
// share its queue: a delivery to the forge is demand for each pool whose
// scope covers the job.
func TestGitHubPoolsShareTheirForge(t *testing.T) {
	d, srv := githubDouble(t, githubdouble.Options{PATs: []string{"ghp_cli"}})
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

// A github pool's installation_id reaches its driver: two organisations
// under one App forge entry (whose installation_id is the first's), the
// second pool naming its own installation, register each in its own
// organisation.
func TestGitHubPoolInstallationIDReachesTheDriver(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	d, srv := githubDouble(t, githubdouble.Options{AppID: 9, AppKey: &key.PublicKey})
	acme := d.AddInstallation("Organization", "acme")
	globex := d.AddInstallation("Organization", "globex")
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	fc := config.Forge{Name: "gh", Type: "github", URL: srv.URL, AppID: 9, AppPrivateKey: keyPEM, InstallationID: acme, PollInterval: time.Hour}
	pools := []config.Pool{
		{Name: "a", Forge: "gh", Scope: "org:acme", Labels: []string{"linux"}},
		{Name: "g", Forge: "gh", Scope: "org:globex", Labels: []string{"linux"}, InstallationID: globex},
	}
	_, forges, err := connectForges(&config.Config{Forges: []config.Forge{fc}, Pools: pools}, "dev")
	if err != nil {
		t.Fatal(err)
	}
	guest := forge.GuestOptions{AgentPath: "/home/runner/run.sh", User: "runner", UID: 1001, GID: 1001, FetchInterval: time.Second}
	for _, name := range []string{"a", "g"} {
		if _, err := forges[name].Register(t.Context(), forge.RunnerSpec{Name: "fa-dev-" + name, Labels: []string{"linux"}, Guest: guest}); err != nil {
			t.Fatalf("pool %s: %v", name, err)
		}
	}
	got := map[string]string{}
	for _, r := range d.Runners() {
		got[r.Name] = r.Scope
	}
	if got["fa-dev-a"] != "org:acme" || got["fa-dev-g"] != "org:globex" {
		t.Fatalf("runners: %v", got)
	}
	for _, v := range d.Violations() {
		t.Errorf("violation: %s", v)
	}
}

// githubDouble serves a GitHub double held to GitHub's description, with
// o's credentials.
func githubDouble(t *testing.T, o githubdouble.Options) (*githubdouble.Double, *httptest.Server) {
	t.Helper()
	spec, err := githubdouble.LoadSpec("../forge/github/testdata/github-actions-runners.openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	o.Spec = spec
	d := githubdouble.New(o)
	srv := httptest.NewServer(d)
	t.Cleanup(srv.Close)
	return d, srv
}
