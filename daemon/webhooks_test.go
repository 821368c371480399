package daemon

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"sync/atomic"
	"testing"

	"github.com/nixos-fireactions/nixos-fireactions/api"
	"github.com/nixos-fireactions/nixos-fireactions/config"
	"github.com/nixos-fireactions/nixos-fireactions/metrics"
)

// kickCounter is the backend a webhook needs, counting its kicks.
type kickCounter struct {
	api.Backend
	kicks atomic.Int64
}

func (k *kickCounter) Kick() { k.kicks.Add(1) }

// TestOneDeliveryToAForgeWithThreePoolsIsHandledOnce: three pools name
// one GitLab (a project, its group, the instance: each covers the job's
// project). One job delivery, through the API as serve builds it, is read
// once, checked and de-duplicated once, its pending job looked up at
// GitLab once, counted once in fireactions_forge_requests_total and kicks
// the pools once; its replay changes nothing. Before the forge had one
// driver (a GitLab driver per pool, the delivery fanned out to each) the
// job was looked up 3 times and the pools kicked 3 times.
func TestOneDeliveryToAForgeWithThreePoolsIsHandledOnce(t *testing.T) {
	var lookups, other atomic.Int64
	job := regexp.MustCompile(`^/api/v4/projects/2/jobs/7$`)
	gitlab := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && job.MatchString(r.URL.Path) {
			lookups.Add(1)
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"id":7,"status":"pending","tag_list":["linux"],"created_at":"2026-03-02T09:14:05Z"}`))
			return
		}
		other.Add(1)
		http.NotFound(w, r)
	}))
	t.Cleanup(gitlab.Close)
	pool := func(name, scope string) config.Pool {
		return config.Pool{Name: name, Forge: "gl", Scope: scope, Labels: []string{"linux"}}
	}
	cfg := &config.Config{
		Forges: []config.Forge{{Name: "gl", Type: "gitlab", URL: gitlab.URL, Token: "glpat-x", WebhookSecret: "hook-secret"}},
		Pools:  []config.Pool{pool("project", "project:acme/app"), pool("group", "group:acme"), pool("instance", "instance")},
	}
	drivers, forges, err := connectForges(cfg, "dev")
	if err != nil {
		t.Fatal(err)
	}
	if len(drivers.drivers) != 1 || len(forges) != 3 {
		t.Fatalf("%d drivers for 1 forge, %d scopes for 3 pools", len(drivers.drivers), len(forges))
	}
	mx := metrics.New(t.TempDir())
	backend := &kickCounter{}
	h := newTestAPIHandler(api.Options{Backend: backend, Webhooks: drivers.webhooks(mx), Tokens: []string{"tok"}})

	body, err := os.ReadFile("../forge/gitlab/testdata/job-hook-pending.json")
	if err != nil {
		t.Fatal(err)
	}
	deliver := func() (int, *countingReader) {
		cr := &countingReader{r: bytes.NewReader(body), size: int64(len(body))}
		r := httptest.NewRequest(http.MethodPost, "/webhooks/gl", cr)
		r.ContentLength = cr.size
		r.Header.Set("X-Gitlab-Event", "Job Hook")
		r.Header.Set("X-Gitlab-Token", "hook-secret")
		r.Header.Set("X-Gitlab-Event-UUID", "2b3e-1")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w.Code, cr
	}
	code, cr := deliver()
	if code != http.StatusNoContent {
		t.Fatalf("delivery: %d", code)
	}
	if n := cr.n.Load(); n != int64(len(body)) {
		t.Errorf("%d bytes read for a %d-byte body", n, len(body))
	}
	if n := lookups.Load(); n != 1 {
		t.Errorf("the pending job was looked up %d times for one delivery to 3 pools, want once", n)
	}
	if n := backend.kicks.Load(); n != 1 {
		t.Errorf("one delivery kicked the pools %d times, want once", n)
	}
	if n := webhooksCounted(t, mx, "gl"); n != 1 {
		t.Errorf("one delivery counted %v times, want once", n)
	}
	if n := other.Load(); n != 0 {
		t.Errorf("%d other requests to GitLab", n)
	}

	// The replay: de-duplicated once for the forge, counted as a request.
	if code, _ := deliver(); code != http.StatusNoContent {
		t.Fatalf("replay: %d", code)
	}
	if lookups.Load() != 1 || backend.kicks.Load() != 1 {
		t.Errorf("the replay looked the job up or kicked: %d look-ups, %d kicks", lookups.Load(), backend.kicks.Load())
	}
	if n := webhooksCounted(t, mx, "gl"); n != 2 {
		t.Errorf("2 deliveries counted %v times", n)
	}
}

// webhooksCounted is fireactions_forge_requests_total{forge, op="webhook"}.
func webhooksCounted(t *testing.T, mx *metrics.Metrics, forgeName string) float64 {
	t.Helper()
	mfs, err := mx.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "fireactions_forge_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["forge"] == forgeName && labels["op"] == "webhook" {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}
