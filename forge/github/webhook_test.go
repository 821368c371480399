package github_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/api"
	"github.com/nixos-fireactions/nixos-fireactions/config"
	"github.com/nixos-fireactions/nixos-fireactions/forge"
	"github.com/nixos-fireactions/nixos-fireactions/forge/github"
	"github.com/nixos-fireactions/nixos-fireactions/internal/double/githubdouble"
)

const hookSecret = "hook-secret-for-tests"

// GitHub's 8 example workflow_job payloads, by what they are:
const (
	octoInProgress   = 0 // octo-org/example-workflow, job 2832853555, gpu/db-app/dc-03
	helloCompletedKO = 1 // Codertocat/Hello-World, job 289782451, ubuntu-latest
	helloCompletedOK = 2
	helloInProgress  = 3
	wolfyInProgress  = 4 // wolfy1339/github-events-schemas: in no pool's scope
	helloQueued      = 5
	k8sQueued        = 6 // lineville/elastic-machines-testing, job 12877621891, self-hosted/k8s; status still "waiting"
	k8sWaiting       = 7
)

func examplePayloads(t testing.TB) []json.RawMessage {
	t.Helper()
	b, err := os.ReadFile(hooksPath)
	if err != nil {
		t.Fatal(err)
	}
	var list []json.RawMessage
	if err := json.Unmarshal(b, &list); err != nil || len(list) != 8 {
		t.Fatalf("examples: %d payloads, %v", len(list), err)
	}
	return list
}

// hookFarm is the pool manager over three GitHub pools, webhooks through
// the real API handler.
type hookFarm struct {
	*farm
	t       *testing.T
	h       http.Handler
	pools   map[string]*github.Pool
	payload []json.RawMessage
}

func newHookFarm(t *testing.T, helloLabels ...string) *hookFarm {
	e := newEnv(t, envOptions{pats: []string{"ghp_hooks"}})
	c, err := github.New(github.Options{Name: "github", URL: e.url, Token: "ghp_hooks", WebhookSecret: hookSecret,
		PollInterval: time.Hour, Retry: fastRetry})
	if err != nil {
		t.Fatal(err)
	}
	cfgs := []config.Pool{
		poolConfig("hello", "repo:Codertocat/Hello-World", helloLabels...),
		poolConfig("k8s", "repo:lineville/elastic-machines-testing", "k8s", "self-hosted"),
		poolConfig("gpu", "org:octo-org", "gpu", "db-app", "dc-03", "self-hosted"),
	}
	pools := map[string]*github.Pool{}
	forges := map[string]forge.Forge{}
	for _, pc := range cfgs {
		s, err := config.ParseScope(pc.Scope)
		if err != nil {
			t.Fatal(err)
		}
		p, err := c.Pool(github.PoolOptions{Scope: github.Scope{Kind: s.Kind, Org: s.Org, Owner: s.Owner, Repo: s.Repo}, Labels: pc.Labels})
		if err != nil {
			t.Fatal(err)
		}
		pools[pc.Name], forges[pc.Name] = p, p
	}
	f := newFarm(t, forges, cfgs...)
	// Deliveries come after the first reconcile, whose poll round would
	// otherwise ask the double about jobs only the webhooks know.
	deadline := time.Now().Add(10 * time.Second)
	for !f.m.Ready() {
		if time.Now().After(deadline) {
			t.Fatal("the pool manager never finished a reconcile")
		}
		time.Sleep(10 * time.Millisecond)
	}
	h := api.NewHandler(api.Options{Backend: f.m, Webhooks: map[string]forge.WebhookReceiver{"github": c}}, false)
	return &hookFarm{farm: f, t: t, h: h, pools: pools, payload: examplePayloads(t)}
}

// deliver posts a payload as GitHub would, with a delivery id and a
// signature made with secret.
func (f *hookFarm) deliver(i int, delivery, secret string) (int, string) {
	return f.post("workflow_job", delivery, secret, f.payload[i])
}

func (f *hookFarm) post(event, delivery, secret string, body []byte) (int, string) {
	return f.postSig(event, delivery, githubdouble.SignPayload(secret, body), body)
}

func (f *hookFarm) postSig(event, delivery, sig string, body []byte) (int, string) {
	r := httptest.NewRequest(http.MethodPost, "/webhooks/github", strings.NewReader(string(body)))
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("X-GitHub-Event", event)
	r.Header.Set("X-GitHub-Delivery", delivery)
	if sig != "" {
		r.Header.Set("X-Hub-Signature-256", sig)
	}
	w := httptest.NewRecorder()
	f.h.ServeHTTP(w, r)
	return w.Code, strings.TrimSpace(w.Body.String())
}

// expect waits for the VMs started per pool to be want, and checks they
// stay so.
func (f *hookFarm) expect(want map[string]int) {
	f.t.Helper()
	match := func() bool {
		got, _ := f.obs.counts()
		for _, p := range []string{"hello", "k8s", "gpu"} {
			if got[p] != want[p] {
				return false
			}
		}
		return true
	}
	deadline := time.Now().Add(5 * time.Second)
	for !match() {
		if time.Now().After(deadline) {
			got, _ := f.obs.counts()
			f.t.Fatalf("VMs started per pool: %v, want %v", got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // several reconciles: nothing more starts
	if !match() {
		got, _ := f.obs.counts()
		f.t.Fatalf("VMs started per pool changed to %v, want %v", got, want)
	}
}

func (f *hookFarm) queued(pool string) []forge.Job {
	f.t.Helper()
	jobs, err := f.pools[pool].QueuedJobs(f.t.Context())
	if err != nil {
		f.t.Fatal(err)
	}
	return jobs
}

// The 8 real payloads drive the scaling decisions: a bad or missing
// signature changes nothing; a queued job starts one VM in the pool
// offering its labels (self-hosted implied); a replay starts none; a
// delivery older than what is known (queued after in_progress or
// completed) does not bring a job back; waiting is not yet demand, nor
// is action queued while the payload's status says waiting (a job held
// for an environment's approval); once approved (queued, status queued)
// it is, and a later waiting takes it back out of the queue; jobs
// outside every pool's scope are ignored.
func TestWebhookPayloadsDriveScaling(t *testing.T) {
	f := newHookFarm(t, "ubuntu-latest", "self-hosted")
	none := map[string]int{}
	f.expect(none)

	orig := f.payload[helloQueued]
	tampered := []byte(strings.Replace(string(orig), `"ubuntu-latest"`, `"k8s"`, 1))
	for _, tc := range []struct {
		name, sig string
		body      []byte
	}{
		{"wrong secret", githubdouble.SignPayload("not-the-secret", orig), orig},
		{"no signature", "", orig},
		{"not hex", "sha256=zz", orig},
		{"tampered body", githubdouble.SignPayload(hookSecret, orig), tampered},
	} {
		if code, _ := f.postSig("workflow_job", "bad-"+tc.name, tc.sig, tc.body); code != http.StatusUnauthorized {
			t.Fatalf("%s: %d, want 401", tc.name, code)
		}
	}
	if jobs := f.queued("k8s"); len(jobs) != 0 {
		t.Fatalf("a badly signed delivery was taken: %+v", jobs)
	}
	f.expect(none)

	if code, body := f.deliver(helloQueued, "d-5", hookSecret); code != http.StatusOK || !strings.Contains(body, "queue changed") {
		t.Fatalf("signed queued: %d %q", code, body)
	}
	if jobs := f.queued("hello"); len(jobs) != 1 || jobs[0].ID != "289782451" || jobs[0].Repo != "Codertocat/Hello-World" ||
		strings.Join(jobs[0].Labels, ",") != "ubuntu-latest" {
		t.Fatalf("hello queue = %+v", jobs)
	}
	f.expect(map[string]int{"hello": 1})

	if code, body := f.deliver(helloQueued, "d-5", hookSecret); code != http.StatusOK || !strings.Contains(body, "duplicate") {
		t.Fatalf("replay: %d %q", code, body)
	}
	f.deliver(helloQueued, "d-5-again", hookSecret) // same job, new delivery: still one job
	f.expect(map[string]int{"hello": 1})

	// Out of order: the job's start and end, then a late queued.
	for _, c := range []struct {
		i  int
		id string
	}{{helloInProgress, "d-3"}, {helloCompletedKO, "d-1"}, {helloCompletedOK, "d-2"}, {helloQueued, "d-5-late"}} {
		if code, _ := f.deliver(c.i, c.id, hookSecret); code != http.StatusOK {
			t.Fatalf("delivery %s: %d", c.id, code)
		}
	}
	if jobs := f.queued("hello"); len(jobs) != 0 {
		t.Fatalf("a late queued delivery brought the job back: %+v", jobs)
	}

	// Held for approval is not demand, whether the action says queued
	// (its status says waiting) or waiting.
	f.deliver(k8sQueued, "d-6", hookSecret)
	if jobs := f.queued("k8s"); len(jobs) != 0 {
		t.Fatalf("a job waiting for approval is demand: %+v", jobs)
	}
	f.deliver(k8sWaiting, "d-7", hookSecret)
	f.expect(map[string]int{"hello": 1})
	// Approved: queued with status queued.
	approved := []byte(strings.Replace(string(f.payload[k8sQueued]), `"status": "waiting"`, `"status": "queued"`, 1))
	if string(approved) == string(f.payload[k8sQueued]) {
		t.Fatal("no status to rewrite in the k8s payload")
	}
	f.post("workflow_job", "d-6-approved", hookSecret, approved)
	if jobs := f.queued("k8s"); len(jobs) != 1 || strings.Join(jobs[0].Labels, ",") != "self-hosted,k8s" {
		t.Fatalf("k8s queue = %+v", jobs)
	}
	f.expect(map[string]int{"hello": 1, "k8s": 1})
	// Held again (a later rule): out of the queue.
	if code, body := f.deliver(k8sWaiting, "d-7-again", hookSecret); code != http.StatusOK || !strings.Contains(body, "queue changed") {
		t.Fatalf("waiting after queued: %d %q", code, body)
	}
	if jobs := f.queued("k8s"); len(jobs) != 0 {
		t.Fatalf("a job held for approval stayed queued: %+v", jobs)
	}

	// In progress only (never seen queued), and out of scope.
	f.deliver(octoInProgress, "d-0", hookSecret)
	code, body := f.deliver(wolfyInProgress, "d-4", hookSecret)
	if code != http.StatusOK || !strings.Contains(body, "not a repository") {
		t.Fatalf("out of scope: %d %q", code, body)
	}
	f.expect(map[string]int{"hello": 1, "k8s": 1})

	if code, _ := f.post("ping", "p-1", hookSecret, []byte(`{"zen":"Keep it logically awesome."}`)); code != http.StatusOK {
		t.Fatalf("ping: %d", code)
	}
	if code, _ := f.post("push", "x-1", hookSecret, []byte(`{}`)); code != http.StatusAccepted {
		t.Fatalf("other event: %d", code)
	}
	if _, unserved := f.obs.counts(); unserved != 0 {
		t.Fatalf("%d jobs counted as unservable", unserved)
	}
}

// A queued job whose labels no pool offers is counted once however often
// it is delivered, and starts nothing.
func TestUnservableJobCountedOnce(t *testing.T) {
	f := newHookFarm(t, "linux", "self-hosted") // no pool offers ubuntu-latest
	for _, id := range []string{"d-1", "d-2", "d-3"} {
		if code, _ := f.deliver(helloQueued, id, hookSecret); code != http.StatusOK {
			t.Fatalf("delivery %s: %d", id, code)
		}
	}
	// The count comes with a reconcile: wait for it, then for several more.
	deadline := time.Now().Add(5 * time.Second)
	for _, unserved := f.obs.counts(); unserved == 0 && time.Now().Before(deadline); _, unserved = f.obs.counts() {
		time.Sleep(20 * time.Millisecond)
	}
	f.expect(map[string]int{})
	if _, unserved := f.obs.counts(); unserved != 1 {
		t.Fatalf("unservable job counted %d times, want once", unserved)
	}
}

// Without a webhook secret the endpoint refuses deliveries.
func TestWebhooksOffWithoutSecret(t *testing.T) {
	e := newEnv(t, envOptions{pats: []string{"p"}})
	c, _ := github.New(github.Options{Name: "github", URL: e.url, Token: "p"})
	e.pool(c, github.PoolOptions{Scope: github.Scope{Kind: "repo", Owner: "Codertocat", Repo: "Hello-World"}, Labels: []string{"l"}})
	r := httptest.NewRequest(http.MethodPost, "/webhooks/github", strings.NewReader(string(examplePayloads(t)[helloQueued])))
	r.Header.Set("X-GitHub-Event", "workflow_job")
	w := httptest.NewRecorder()
	kicked := false
	c.ServeWebhook(w, r, func() { kicked = true })
	if w.Code != http.StatusNotFound || kicked {
		t.Fatalf("%d, kicked %v", w.Code, kicked)
	}
}

// A VM that fails to start, or dies before its runner is ready, leaves no
// runner at GitHub: the JIT runner registered for it is deleted.
func TestRunnerRemovedWhenTheVMFails(t *testing.T) {
	e := newEnv(t, envOptions{pats: []string{"p"}})
	c, _ := github.New(github.Options{Name: "github", URL: e.url, Token: "p", PollInterval: time.Hour, Retry: fastRetry})
	p := e.pool(c, github.PoolOptions{Scope: github.Scope{Kind: "repo", Owner: "acme", Repo: "w"}, Labels: []string{"linux"}})
	e.d.QueueJob("acme/w", "linux")
	f := newFarm(t, map[string]forge.Forge{"w": p}, poolConfig("w", "repo:acme/w", "linux"))
	m := <-f.hv.started
	if n := len(e.d.Runners()); n != 1 {
		t.Fatalf("%d runners while the VM boots", n)
	}
	f.hv.fail.Store(true) // the next start fails
	m.crash()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if len(e.d.Runners()) == 0 && e.d.Calls()["actions/delete-self-hosted-runner-from-repo"] >= 2 {
			break // the crashed VM's runner, then the failed start's
		}
		if time.Now().After(deadline) {
			t.Fatalf("runners %+v, calls %v", e.d.Runners(), e.d.Calls())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := e.d.Calls()["actions/generate-runner-jitconfig-for-repo"]; n < 2 {
		t.Fatalf("%d registrations: the failed start was not tried", n)
	}
}
