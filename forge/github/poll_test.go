package github_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/forge/github"
	"github.com/nixos-fireactions/nixos-fireactions/internal/double/githubdouble"
)

func jobIDs(t *testing.T, p *github.Pool) string {
	t.Helper()
	jobs, err := p.QueuedJobs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, j := range jobs {
		ids = append(ids, j.ID+"="+strings.Join(j.Labels, ","))
	}
	return strings.Join(ids, " ")
}

// Without webhooks the first look at the queue polls: the queued runs of
// the pool's repositories and their jobs, labels spelled as configured
// (GitHub's are case-insensitive); only the pool's repositories count.
func TestPollingFindsQueuedJobs(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.d.AddInstallation("Organization", "acme")
	j := e.d.QueueJob("acme/widgets", "Self-Hosted", "LINUX")
	e.d.QueueJob("acme/other", "linux") // not in repos
	e.d.QueueJob("zeta/widgets", "linux")
	p := e.pool(e.app(), github.PoolOptions{Scope: github.Scope{Kind: "org", Org: "acme"}, Repos: []string{"acme/widgets"},
		Labels: []string{"self-hosted", "linux"}})
	want := itoa(j.ID) + "=self-hosted,linux"
	if got := jobIDs(t, p); got != want {
		t.Fatalf("queued = %q, want %q", got, want)
	}
	e.d.SetJobStatus(j.ID, "in_progress", "")
	if err := p.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := jobIDs(t, p); got != "" {
		t.Fatalf("a job someone took is still queued: %q", got)
	}
}

// hookedEnv delivers the double's webhooks to the pool.
func hookedEnv(t *testing.T, interval time.Duration, repos []string) (*env, *github.Pool) {
	e := newEnv(t, envOptions{})
	e.d.AddInstallation("Organization", "acme")
	c := e.app(func(o *github.Options) { o.WebhookSecret = hookSecret; o.PollInterval = interval })
	p := e.pool(c, github.PoolOptions{Scope: github.Scope{Kind: "org", Org: "acme"}, Repos: repos, Labels: []string{"linux"}})
	hooks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { c.ServeWebhook(w, r, func() {}) }))
	t.Cleanup(hooks.Close)
	examples, err := os.ReadFile(hooksPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.d.SetWebhook(githubdouble.WebhookTarget{URL: hooks.URL, Secret: hookSecret, Examples: examples}); err != nil {
		t.Fatal(err)
	}
	return e, p
}

func waitQueue(t *testing.T, p *github.Pool, want string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := jobIDs(t, p)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("queue = %q, want %q", got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Webhooks and polls merge: a job reported by both is one job; a
// delivery lost for its queueing, start or end is healed by the next
// round.
func TestReconcilerHealsLostDeliveries(t *testing.T) {
	e, p := hookedEnv(t, time.Hour, []string{"acme/widgets"})
	ctx := context.Background()
	jobIDs(t, p) // the first round: nothing queued yet

	a := e.d.QueueJob("acme/widgets", "linux") // delivered
	waitQueue(t, p, itoa(a.ID)+"=linux")
	if err := p.Reconcile(ctx); err != nil { // the poll sees it too
		t.Fatal(err)
	}
	waitQueue(t, p, itoa(a.ID)+"=linux")

	e.d.SetWebhookFaults(1, 0) // every delivery lost from here on
	b := e.d.QueueJob("acme/widgets", "linux")
	e.d.SetJobStatus(a.ID, "in_progress", "")
	if err := p.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	waitQueue(t, p, itoa(b.ID)+"=linux")
	e.d.SetJobStatus(b.ID, "completed", "cancelled")
	if err := p.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	waitQueue(t, p, "")
	if _, dropped, _ := e.d.Deliveries(); dropped < 3 {
		t.Fatalf("only %d deliveries dropped: the test did not test healing", dropped)
	}
}

// A repository that is not polled (an org pool hears of it by webhook
// only): a queued job whose end was never delivered is asked about once
// it has been quiet for a poll period.
func TestUnpolledJobIsVerified(t *testing.T) {
	e, p, j := unpolledJob(t)
	ctx := context.Background()
	e.d.SetWebhookFaults(1, 0)
	e.d.SetJobStatus(j.ID, "completed", "success")
	if err := p.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if e.d.Calls()["actions/get-job-for-workflow-run"] != 0 {
		t.Fatal("a job just delivered was verified at once")
	}
	waitQueue(t, p, itoa(j.ID)+"=linux")
	time.Sleep(1100 * time.Millisecond)
	if err := p.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	waitQueue(t, p, "")
	if e.d.Calls()["actions/get-job-for-workflow-run"] != 1 {
		t.Fatalf("calls %v", e.d.Calls())
	}
}

// unpolledJob is an org pool hearing of acme/widgets by webhook only (a
// poll period of 1s), its first round done, and a job it was told is
// queued.
func unpolledJob(t *testing.T) (*env, *github.Pool, githubdouble.Job) {
	t.Helper()
	e, p := hookedEnv(t, time.Second, nil)
	jobIDs(t, p)
	j := e.d.QueueJob("acme/widgets", "linux")
	waitQueue(t, p, itoa(j.ID)+"=linux")
	return e, p, j
}

// Without webhooks a first round that fails leaves the queue unknown: an
// error, so the manager neither starts nor removes anything. With
// webhooks the deliveries still count.
func TestFirstRoundFailure(t *testing.T) {
	e := newEnv(t, envOptions{pats: []string{"p"}})
	e.d.SetFaults(githubdouble.Faults{Rate: 1, Kinds: []githubdouble.FaultKind{githubdouble.FaultServerError}})
	scope := github.PoolOptions{Scope: github.Scope{Kind: "repo", Owner: "acme", Repo: "w"}, Labels: []string{"l"}}
	retry := github.RetryOptions{Attempts: 2, Backoff: time.Millisecond}
	c, _ := github.New(github.Options{Name: "gh", URL: e.url, Token: "p", Retry: retry})
	if _, err := e.pool(c, scope).QueuedJobs(context.Background()); err == nil || !strings.Contains(err.Error(), "502") {
		t.Fatalf("without webhooks: %v", err)
	}
	c, _ = github.New(github.Options{Name: "gh", URL: e.url, Token: "p", Retry: retry, WebhookSecret: "s"})
	if _, err := e.pool(c, scope).QueuedJobs(context.Background()); err != nil {
		t.Fatalf("with webhooks: %v", err)
	}
}

// A job held for approval leaves the queue; when its approval is lost
// (or overtaken by a late "waiting"), a repository not polled is asked
// about the job once it has been quiet for a poll period, and the
// approved job is demand again.
func TestApprovedJobHealsWithoutItsDelivery(t *testing.T) {
	e, p, j := unpolledJob(t)
	ctx := context.Background()
	e.d.SetJobStatus(j.ID, "waiting", "") // delivered: held for approval
	waitQueue(t, p, "")
	e.d.SetWebhookFaults(1, 0)
	e.d.SetJobStatus(j.ID, "queued", "") // approved; the delivery is lost
	time.Sleep(1100 * time.Millisecond)
	if err := p.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	waitQueue(t, p, itoa(j.ID)+"=linux")
	if n := e.d.Calls()["actions/get-job-for-workflow-run"]; n != 1 {
		t.Fatalf("%d job reads, want 1: calls %v", n, e.d.Calls())
	}
}

// A job held for approval in a repository not polled is read less and
// less often while it waits: over ten simulated minutes of 1s rounds
// (poll period 1s) a handful of reads, not one per period; a delivery
// for the job starts the spacing again; a lost approval is still found.
func TestWaitingJobReadsBackOff(t *testing.T) {
	e, p, j := unpolledJob(t)
	var at atomic.Int64
	at.Store(time.Now().UnixNano())
	github.SetNow(p, func() time.Time { return time.Unix(0, at.Load()) })
	ctx := context.Background()
	e.d.SetJobStatus(j.ID, "waiting", "") // delivered: held for approval
	waitQueue(t, p, "")
	reads := func() int { return e.d.Calls()["actions/get-job-for-workflow-run"] }
	rounds := func(n int) {
		for range n {
			at.Add(int64(time.Second))
			if err := p.Reconcile(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	rounds(600)
	// Reads at about 2, 4, 8, ... 512 s after the first: 9 or 10.
	n := reads()
	if n < 5 || n > 11 {
		t.Fatalf("%d reads of a waiting job in 600 periods, want about log2(600)", n)
	}
	t.Logf("FIGURE %d reads of a waiting job in 600 periods", n)
	// A delivery (it is still waiting) starts again: reads come soon.
	before := reads()
	sent, _, _ := e.d.Deliveries()
	e.d.SetJobStatus(j.ID, "waiting", "")
	waitFor(t, "the delivery", func() bool { n, _, _ := e.d.Deliveries(); return n > sent })
	rounds(10)
	if n := reads() - before; n < 2 {
		t.Fatalf("%d reads in 10 periods after a delivery, want the spacing started again", n)
	}
	// The approval's delivery is lost: a read still finds it, within the
	// back-off's bound.
	e.d.SetWebhookFaults(1, 0)
	e.d.SetJobStatus(j.ID, "queued", "")
	rounds(int((30*time.Minute + 2*time.Second) / time.Second))
	waitQueue(t, p, itoa(j.ID)+"=linux")
}
