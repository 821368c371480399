package daemon

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/api"
	"github.com/nixos-fireactions/nixos-fireactions/config"
	"github.com/nixos-fireactions/nixos-fireactions/forge"
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
	e := newGitLabHookEnv(t)
	if len(e.drivers.drivers) != 1 || len(e.forges) != 3 {
		t.Fatalf("%d drivers for 1 forge, %d scopes for 3 pools", len(e.drivers.drivers), len(e.forges))
	}
	lookups, other, backend, mx, body := &e.lookups, &e.other, e.backend, e.mx, e.body
	deliver := func() (int, *countingReader) { return e.deliver("2b3e-1") }
	code, cr := deliver()
	if code != http.StatusNoContent {
		t.Fatalf("delivery: %d", code)
	}
	if n := cr.n.Load(); n != int64(len(body)) {
		t.Errorf("%d bytes read for a %d-byte body", n, len(body))
	}
	// The look-up follows the answer (GitLab's webhook timeout).
	e.settle(t)
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
	time.Sleep(200 * time.Millisecond) // a look-up the replay started would be done
	if lookups.Load() != 1 || backend.kicks.Load() != 1 {
		t.Errorf("the replay looked the job up or kicked: %d look-ups, %d kicks", lookups.Load(), backend.kicks.Load())
	}
	if n := webhooksCounted(t, mx, "gl"); n != 2 {
		t.Errorf("2 deliveries counted %v times", n)
	}
}

// gitLabHookEnv is serve's webhook path for a GitLab with three pools
// covering project acme/app (project, group, instance scope), against a
// GitLab that answers the look-up of its pending job 7 only.
type gitLabHookEnv struct {
	cfg            *config.Config
	drivers        *forgeSet
	forges         map[string]forge.Forge
	mx             *metrics.Metrics
	backend        *kickCounter
	h              http.Handler
	body           []byte
	lookups, other atomic.Int64
}

func newGitLabHookEnv(t *testing.T) *gitLabHookEnv {
	t.Helper()
	e := &gitLabHookEnv{mx: metrics.New(t.TempDir()), backend: &kickCounter{}}
	job := regexp.MustCompile(`^/api/v4/projects/2/jobs/7$`)
	gitlab := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && job.MatchString(r.URL.Path) {
			e.lookups.Add(1)
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"id":7,"status":"pending","tag_list":["linux"],"created_at":"2026-03-02T09:14:05Z"}`))
			return
		}
		e.other.Add(1)
		http.NotFound(w, r)
	}))
	t.Cleanup(gitlab.Close)
	pool := func(name, scope string) config.Pool {
		return config.Pool{Name: name, Forge: "gl", Scope: scope, Labels: []string{"linux"}}
	}
	e.cfg = &config.Config{
		Forges: []config.Forge{{Name: "gl", Type: "gitlab", URL: gitlab.URL, Token: "glpat-x", WebhookSecret: "hook-secret"}},
		Pools:  []config.Pool{pool("project", "project:acme/app"), pool("group", "group:acme"), pool("instance", "instance")},
	}
	var err error
	if e.drivers, e.forges, err = connectForges(e.cfg, "dev"); err != nil {
		t.Fatal(err)
	}
	e.h = newTestAPIHandler(api.Options{Backend: e.backend, Webhooks: e.drivers.webhooks(e.mx), Tokens: []string{"tok"}})
	if e.body, err = os.ReadFile("../forge/gitlab/testdata/job-hook-pending.json"); err != nil {
		t.Fatal(err)
	}
	return e
}

// settle waits (up to 5 s) for the look-up and kick that follow a
// delivery's answer, and a little more for any extra one.
func (e *gitLabHookEnv) settle(t *testing.T) {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); e.lookups.Load() == 0 || e.backend.kicks.Load() == 0; {
		if time.Now().After(end) {
			t.Fatalf("no look-up and kick within 5s: %d look-ups, %d kicks", e.lookups.Load(), e.backend.kicks.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
}

// deliver posts the pending job's Job Hook with delivery id uuid.
func (e *gitLabHookEnv) deliver(uuid string) (int, *countingReader) {
	cr := &countingReader{r: bytes.NewReader(e.body), size: int64(len(e.body))}
	r := httptest.NewRequest(http.MethodPost, "/webhooks/gl", cr)
	r.ContentLength = cr.size
	r.Header.Set("X-Gitlab-Event", "Job Hook")
	r.Header.Set("X-Gitlab-Token", "hook-secret")
	r.Header.Set("X-Gitlab-Event-UUID", uuid)
	w := httptest.NewRecorder()
	e.h.ServeHTTP(w, r)
	return w.Code, cr
}

// TestReloadKeepsTheForgesDriver: a reload asks the running driver for
// the new pools' scopes; the route the API got at start still reaches
// the pools, unchanged and changed alike, once per delivery.
func TestReloadKeepsTheForgesDriver(t *testing.T) {
	e := newGitLabHookEnv(t)
	before := e.drivers.drivers["gl"]
	cfg := *e.cfg
	cfg.Pools = append([]config.Pool(nil), e.cfg.Pools...)
	cfg.Pools[1].Labels = []string{"linux", "big"} // pool "group" changed
	reloaded, fresh, err := e.drivers.connect(&cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if e.drivers.drivers["gl"] != before || len(e.drivers.drivers) != 1 || len(fresh) != 0 {
		t.Fatal("the reload built another driver for the forge")
	}
	// The manager keeps the unchanged pools' scopes, takes the changed one's.
	e.drivers.retain(map[string]forge.Forge{"project": e.forges["project"], "group": reloaded["group"], "instance": e.forges["instance"]})
	if code, _ := e.deliver("after-reload"); code != http.StatusNoContent {
		t.Fatalf("delivery after the reload: %d", code)
	}
	e.settle(t)
	if e.lookups.Load() != 1 || e.backend.kicks.Load() != 1 {
		t.Fatalf("after the reload one delivery: %d look-ups, %d kicks; want 1, 1", e.lookups.Load(), e.backend.kicks.Load())
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
