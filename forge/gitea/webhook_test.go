package gitea

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/forge"
	"github.com/nixos-fireactions/nixos-fireactions/internal/double/giteadouble"
)

const hookSecret = "HOOK-SECRET"

// hookRig is a driver of a Gitea double with webhooks on, its scopes,
// and what each scope was told.
type hookRig struct {
	g      *giteadouble.Gitea
	d      *Driver
	scopes []*Forge
	mu     sync.Mutex
	told   map[*Forge][]forge.QueueChange
	kicks  int
}

func newHookRig(t *testing.T, secret string, scopes ...Scope) *hookRig {
	t.Helper()
	g := giteadouble.New()
	srv := giteadouble.Serve(t, g)
	d, err := NewDriver("gitea", Options{URL: srv.URL, Token: "API-TOKEN", Version: "test", WebhookSecret: secret})
	if err != nil {
		t.Fatal(err)
	}
	r := &hookRig{g: g, d: d, told: map[*Forge][]forge.QueueChange{}}
	for _, s := range scopes {
		f, err := d.Scope(s)
		if err != nil {
			t.Fatal(err)
		}
		r.scopes = append(r.scopes, f)
	}
	return r
}

// listen has every scope tell r what it is told.
func (r *hookRig) listen() {
	for _, f := range r.scopes {
		f.NotifyQueue(func(c forge.QueueChange) {
			r.mu.Lock()
			r.told[f] = append(r.told[f], c)
			r.mu.Unlock()
		})
	}
}

// send hands the delivery to the driver as the API does.
func (r *hookRig) send(dl giteadouble.Delivery) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, "/webhooks/gitea", bytes.NewReader(dl.Body))
	req.Header = dl.Header.Clone()
	rec := httptest.NewRecorder()
	r.d.ServeWebhook(rec, req, func() {
		r.mu.Lock()
		r.kicks++
		r.mu.Unlock()
	})
	return rec
}

func (r *hookRig) toldOf(f *Forge) []forge.QueueChange {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]forge.QueueChange(nil), r.told[f]...)
}

var job11 = giteadouble.Job{ID: 11, Labels: []string{"linux", "big"}, Status: "queued", CreatedAt: time.Date(2026, 12, 5, 8, 0, 0, 0, time.UTC)}

func TestWebhookQueuedJobIsToldToTheScopesCoveringItsRepositoryOnce(t *testing.T) {
	r := newHookRig(t, hookSecret, Scope{Kind: "instance"}, Scope{Kind: "org", Org: "acme"},
		Scope{Kind: "repo", Owner: "other", Repo: "x"}, Scope{Kind: "repo", Owner: "Acme", Repo: "App"})
	r.listen()
	hook := giteadouble.Hook{Secret: hookSecret}
	dl := hook.WorkflowJob("d-1", "queued", job11, "acme", "app")
	if rec := r.send(dl); rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), "queue changed") {
		t.Fatalf("delivery: %d %q", rec.Code, rec.Body)
	}
	for i, want := range []int{1, 1, 0, 1} {
		got := r.toldOf(r.scopes[i])
		if len(got) != want {
			t.Errorf("scope %s told %d changes, want %d", r.scopes[i].scope, len(got), want)
			continue
		}
		if want == 1 && (!got[0].Queued || got[0].Job.ID != "11" || strings.Join(got[0].Job.Labels, ",") != "linux,big" ||
			!got[0].Job.QueuedAt.Equal(job11.CreatedAt)) {
			t.Errorf("scope %s told %+v", r.scopes[i].scope, got[0])
		}
	}
	// Gitea retries a delivery with the same id: taken once.
	if rec := r.send(dl); rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), "duplicate") {
		t.Fatalf("redelivery: %d %q", rec.Code, rec.Body)
	}
	if got := r.toldOf(r.scopes[0]); len(got) != 1 {
		t.Fatalf("a redelivery was told again: %+v", got)
	}
	if r.kicks != 0 {
		t.Fatalf("%d kicks for deliveries every scope was told of", r.kicks)
	}
	// The job is taken: it leaves the queue.
	if rec := r.send(hook.WorkflowJob("d-2", "in_progress", job11, "acme", "app")); rec.Code != http.StatusOK {
		t.Fatalf("in_progress: %d %q", rec.Code, rec.Body)
	}
	if got := r.toldOf(r.scopes[1]); len(got) != 2 || got[1].Queued || got[1].Job.ID != "11" {
		t.Fatalf("org scope told %+v, want the job to leave", got)
	}
	// "waiting" (blocked by its needs) is no demand.
	r.send(hook.WorkflowJob("d-3", "waiting", giteadouble.Job{ID: 12, Labels: []string{"linux"}}, "acme", "app"))
	if got := r.toldOf(r.scopes[0]); len(got) != 2 {
		t.Fatalf("a waiting job was told: %+v", got)
	}
}

// TestWebhookRefusesWhatGiteaDidNotSign: a delivery is an attacker's
// until its signature checks; nothing of it is parsed or kept before.
func TestWebhookRefusesWhatGiteaDidNotSign(t *testing.T) {
	r := newHookRig(t, hookSecret, Scope{Kind: "instance"})
	r.listen()
	good := giteadouble.Hook{Secret: hookSecret}.WorkflowJob("d-1", "queued", job11, "acme", "app")
	cases := map[string]giteadouble.Delivery{
		"wrong secret": giteadouble.Hook{Secret: "guess"}.WorkflowJob("d-1", "queued", job11, "acme", "app"),
		"no signature": giteadouble.Hook{}.WorkflowJob("d-1", "queued", job11, "acme", "app"),
	}
	tampered := good
	tampered.Body = bytes.Replace(good.Body, []byte(`"linux"`), []byte(`"gpu"`), 1)
	cases["body changed after signing"] = tampered
	notJSON := good
	notJSON.Body = []byte("{not json")
	cases["unparseable, unsigned"] = notJSON
	for name, dl := range cases {
		if rec := r.send(dl); rec.Code != http.StatusUnauthorized {
			t.Errorf("%s: %d %q, want 401", name, rec.Code, rec.Body)
		}
	}
	if got := r.toldOf(r.scopes[0]); len(got) != 0 {
		t.Fatalf("refused deliveries were told: %+v", got)
	}
	// The refused ones did not take the delivery id: the genuine
	// delivery is not a "duplicate" (positive control).
	if rec := r.send(good); rec.Code != http.StatusOK || len(r.toldOf(r.scopes[0])) != 1 {
		t.Fatalf("the signed delivery: %d %q, told %d", rec.Code, rec.Body, len(r.toldOf(r.scopes[0])))
	}
	// Signed but not a workflow_job payload: 400.
	bad := giteadouble.Hook{Secret: hookSecret}.WorkflowJob("d-2", "queued", job11, "acme", "app")
	bad = signedAs(bad, []byte(`{"action":"queued"}`))
	if rec := r.send(bad); rec.Code != http.StatusBadRequest {
		t.Fatalf("signed, no job: %d %q", rec.Code, rec.Body)
	}
}

// signedAs is dl with body, signed with the rig's secret.
func signedAs(dl giteadouble.Delivery, body []byte) giteadouble.Delivery {
	dl.Body = body
	dl.Header = dl.Header.Clone()
	dl.Header.Set("X-Gitea-Signature", hmacHex(hookSecret, body))
	return dl
}

func TestWebhookBoundsAndRefusals(t *testing.T) {
	r := newHookRig(t, hookSecret, Scope{Kind: "instance"})
	hook := giteadouble.Hook{Secret: hookSecret}
	big := signedAs(hook.WorkflowJob("d-1", "queued", job11, "acme", "app"), bytes.Repeat([]byte(" "), maxWebhookBody+1))
	if rec := r.send(big); rec.Code != http.StatusRequestEntityTooLarge {
		t.Errorf("oversized body: %d", rec.Code)
	}
	form := giteadouble.Hook{Secret: hookSecret, Form: true}.WorkflowJob("d-2", "queued", job11, "acme", "app")
	if rec := r.send(form); rec.Code != http.StatusUnsupportedMediaType {
		t.Errorf("form webhook: %d", rec.Code)
	}
	long := hook.WorkflowJob(strings.Repeat("x", forge.MaxDeliveryID+1), "queued", job11, "acme", "app")
	if rec := r.send(long); rec.Code != http.StatusBadRequest {
		t.Errorf("long delivery id: %d", rec.Code)
	}
	// Events other than workflow_job are acknowledged and ignored.
	push := signedAs(hook.WorkflowJob("d-3", "queued", job11, "acme", "app"), []byte(`{"ref":"refs/heads/main"}`))
	push.Header.Set("X-Gitea-Event", "push")
	if rec := r.send(push); rec.Code != http.StatusAccepted {
		t.Errorf("push event: %d", rec.Code)
	}
	// A scope that does not listen: its demand kicks the pools.
	if rec := r.send(hook.WorkflowJob("d-4", "queued", job11, "acme", "app")); rec.Code != http.StatusOK || r.kicks != 1 {
		t.Errorf("unlistened scope: %d, %d kicks", rec.Code, r.kicks)
	}
	// Webhooks off (no secret): 404, as before.
	off := newHookRig(t, "", Scope{Kind: "instance"})
	if rec := off.send(hook.WorkflowJob("d-5", "queued", job11, "acme", "app")); rec.Code != http.StatusNotFound {
		t.Errorf("no secret: %d", rec.Code)
	}
	// A scope retired by a reload takes no deliveries.
	r.d.Retain(nil)
	if rec := r.send(hook.WorkflowJob("d-6", "queued", job11, "acme", "app")); rec.Code != http.StatusNotFound {
		t.Errorf("no scope in use: %d", rec.Code)
	}
}

// TestQueuedJobsMergesDeliveriesWithTheRead: Gitea's API is the
// authority: a delivered job it no longer lists has left the queue; one
// it lists stays; the read and the deliveries give each job once.
func TestQueuedJobsMergesDeliveriesWithTheRead(t *testing.T) {
	r := newHookRig(t, hookSecret, Scope{Kind: "instance"})
	f := r.scopes[0]
	hook := giteadouble.Hook{Secret: hookSecret}
	r.g.Jobs = []giteadouble.Job{job11}
	r.send(hook.WorkflowJob("d-1", "queued", job11, "acme", "app"))
	r.send(hook.WorkflowJob("d-2", "queued", giteadouble.Job{ID: 12, Labels: []string{"linux"}}, "acme", "app"))
	jobs, err := f.QueuedJobs(context.Background())
	if err != nil || len(jobs) != 1 || jobs[0].ID != "11" {
		t.Fatalf("QueuedJobs = %+v, %v; want only 11 (12 is not listed: it left)", jobs, err)
	}
	// A delivery that comes while the read is under way is kept.
	f.mu.Lock()
	f.hooked[13] = hookedJob{job: forge.Job{ID: "13"}, at: time.Now().Add(time.Hour)}
	f.mu.Unlock()
	jobs, _ = f.QueuedJobs(context.Background())
	if len(jobs) != 2 || jobs[1].ID != "13" {
		t.Fatalf("QueuedJobs = %+v, want 11 and 13", jobs)
	}
}

func hmacHex(secret string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

// TestWebhookIsAnsweredWhileARegistrationTokenFetchStalls: Gitea gives a
// delivery 5 s (DELIVER_TIMEOUT); a registration-token request that
// hangs (up to the client's 30 s) must not hold deliveries up.
func TestWebhookIsAnsweredWhileARegistrationTokenFetchStalls(t *testing.T) {
	g := giteadouble.New()
	srv, asked, _ := stallTokens(t, g)
	d, err := NewDriver("gitea", Options{URL: srv.URL, GuestURL: "http://10.0.0.1:3000", Token: "API-TOKEN", Version: "test", WebhookSecret: hookSecret})
	if err != nil {
		t.Fatal(err)
	}
	f, err := d.Scope(Scope{Kind: "instance", Labels: []string{"linux"}})
	if err != nil {
		t.Fatal(err)
	}
	r := &hookRig{g: g, d: d, scopes: []*Forge{f}, told: map[*Forge][]forge.QueueChange{}}
	r.listen()
	ctx, cancel := context.WithCancel(context.Background())
	regDone := make(chan struct{})
	go func() {
		defer close(regDone)
		f.Register(ctx, forge.RunnerSpec{Name: "fa-h-0123456789ab", Labels: []string{"linux"}, Guest: guestOpts})
	}()
	t.Cleanup(func() { cancel(); <-regDone })
	select {
	case <-asked:
	case <-time.After(5 * time.Second):
		t.Fatal("the registration token was never asked for: the test proves nothing")
	}
	answered := make(chan *httptest.ResponseRecorder, 1)
	go func() {
		answered <- r.send(giteadouble.Hook{Secret: hookSecret}.WorkflowJob("d-1", "queued", job11, "acme", "app"))
	}()
	select {
	case rec := <-answered:
		if rec.Code != http.StatusOK || len(r.toldOf(f)) != 1 {
			t.Fatalf("delivery: %d %q, told %+v", rec.Code, rec.Body, r.toldOf(f))
		}
	case <-time.After(time.Second):
		t.Fatal("a delivery waited behind a stalled registration-token fetch")
	}
}

// stallTokens serves g with its registration-token endpoint stalled until
// release is called (or the test ends); asked gets a value per request.
func stallTokens(t *testing.T, g *giteadouble.Gitea) (srv *httptest.Server, asked chan struct{}, release func()) {
	asked, stop := make(chan struct{}, 8), make(chan struct{})
	var once sync.Once
	release = func() { once.Do(func() { close(stop) }) }
	h := g.Handler()
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/registration-token") {
			select { // past asked's room, a request waits for its end, never the test's
			case asked <- struct{}{}:
			case <-r.Context().Done():
				return
			}
			select {
			case <-stop:
			case <-r.Context().Done():
				return
			}
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(release) // before Close, which waits for handlers
	return srv, asked, release
}

// TestRegistrationTokenIsFetchedOnceAtATime: registrations that come
// while the token is being fetched wait for that fetch and use its token
// (one request to Gitea); one whose context ends while it waits gives up
// at once.
func TestRegistrationTokenIsFetchedOnceAtATime(t *testing.T) {
	g := giteadouble.New()
	srv, asked, release := stallTokens(t, g)
	f := newDriver(t, srv.URL, Scope{Kind: "instance"})
	owner, _ := forge.NewOwner("h")
	ctx := context.Background()
	errs := make(chan error, 2)
	for _, id := range []string{"0123456789ab", "ba9876543210"} {
		go func() {
			_, err := f.Register(ctx, forge.RunnerSpec{Name: owner.RunnerName(id), Labels: []string{"l"}, Guest: guestOpts})
			errs <- err
		}()
	}
	select {
	case <-asked:
	case <-time.After(5 * time.Second):
		t.Fatal("the registration token was never asked for: the test proves nothing")
	}
	sctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	gaveUp := make(chan error, 1)
	go func() {
		_, err := f.Register(sctx, forge.RunnerSpec{Name: owner.RunnerName("aaaaaaaaaaaa"), Labels: []string{"l"}, Guest: guestOpts})
		gaveUp <- err
	}()
	select {
	case err := <-gaveUp:
		if err == nil {
			t.Fatal("a registration whose context ended while the token was fetched succeeded")
		}
	case <-time.After(time.Second):
		release()
		t.Fatal("a registration whose context ended waited on for the token fetch")
	}
	release()
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if n := len(asked); n != 0 {
		t.Fatalf("%d more registration-token requests, want the one", n)
	}
	if names := g.RunnerNames(); len(names) != 2 {
		t.Fatalf("runners at Gitea %q, want 2", names)
	}
}
