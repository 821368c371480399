package github_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/actions/scaleset"

	"github.com/nixos-fireactions/nixos-fireactions/forge"
	"github.com/nixos-fireactions/nixos-fireactions/forge/github"
	"github.com/nixos-fireactions/nixos-fireactions/internal/double/githubdouble"
)

// fastScaleSet keeps scale-set tests quick: short retries and backoffs.
var fastScaleSet = github.ScaleSetOptions{RetryWaitMin: 10 * time.Millisecond, RetryWaitMax: 50 * time.Millisecond,
	BackoffMin: 50 * time.Millisecond, BackoffMax: 300 * time.Millisecond}

// scaleSetEnv is a GitHub Enterprise Server-shaped double (the
// scale-set client reaches a non-github.com host under /api/v3) with an
// App installed on org acme.
func scaleSetEnv(t *testing.T, o envOptions) *env {
	e, _ := scaleSetEnvInst(t, o)
	return e
}

// scaleSetEnvInst is scaleSetEnv and the id of the App's installation
// on acme.
func scaleSetEnvInst(t *testing.T, o envOptions) (*env, int64) {
	o.prefix = "/api/v3"
	if o.messageWait == 0 {
		o.messageWait = 300 * time.Millisecond
	}
	if o.sessionIdle == 0 {
		o.sessionIdle = time.Minute
	}
	e := newEnv(t, o)
	return e, e.d.AddInstallation("Organization", "acme")
}

// host models one orchestrator host over a scale-set pool: like the pool
// manager, it starts a VM (a stand-in runner with its JIT configuration)
// for each queued job its VMs not yet busy do not cover, and removes the
// runner when the VM ends. It only starts VMs from a settled view (the
// driver's queue agrees with the double's statistics of its scale set),
// so that what it counts is GitHub's assignment, not message timing.
type host struct {
	t    *testing.T
	e    *env
	p    *github.Pool
	name string

	mu      sync.Mutex
	changes []forge.QueueChange
	queued  map[string]bool
	seq     int // VMs asked for
	started int // VMs started: their runner registered
	live    int
	ran     []int64 // jobs its stand-ins ran
	errs    []error
	wg      sync.WaitGroup
}

func newHost(t *testing.T, e *env, c *github.Client, hostID string, max int) *host {
	p := e.pool(c, github.PoolOptions{Scope: github.Scope{Kind: "org", Org: "acme"}, Labels: []string{"self-hosted", "fa-small"},
		Demand: github.DemandScaleSet, PoolName: "small", HostID: hostID, MaxRunners: max, ScaleSet: fastScaleSet})
	h := &host{t: t, e: e, p: p, name: hostID, queued: map[string]bool{}}
	p.NotifyQueue(func(ch forge.QueueChange) {
		h.mu.Lock()
		defer h.mu.Unlock()
		h.changes = append(h.changes, ch)
		if ch.Queued {
			h.queued[ch.Job.ID] = true
		} else {
			delete(h.queued, ch.Job.ID)
		}
	})
	t.Cleanup(func() { p.NotifyQueue(nil); h.wg.Wait() })
	return h
}

// settled reports whether the driver's queue matches the double's
// statistics of the host's scale set.
func (h *host) settled() (queued int, ok bool) {
	jobs, _ := h.p.QueuedJobs(context.Background())
	h.mu.Lock()
	told := len(h.queued)
	h.mu.Unlock()
	if told != len(jobs) {
		return 0, false
	}
	for _, s := range h.e.d.ScaleSets() {
		if s.Name != h.p.ScaleSetName() {
			continue
		}
		running := 0
		for _, j := range h.e.d.Jobs() {
			if j.Status == "in_progress" && h.e.d.JobScaleSet(j.ID) == s.ID {
				running++
			}
		}
		return told, s.Session && s.Assigned-running == told
	}
	return 0, false
}

// step starts what the queue lacks.
func (h *host) step() {
	q, ok := h.settled()
	if !ok {
		return
	}
	h.mu.Lock()
	idle := h.live - h.busyLocked()
	n := q - idle
	h.mu.Unlock()
	for range max(n, 0) {
		h.startVM()
	}
}

// busyLocked counts the host's runners the double holds busy.
func (h *host) busyLocked() int {
	n := 0
	for _, r := range h.e.d.Runners() {
		if r.Busy && strings.HasPrefix(r.Name, "fa-"+h.name+"-") {
			n++
		}
	}
	return n
}

func (h *host) startVM() {
	h.mu.Lock()
	h.seq++
	h.live++
	name := fmt.Sprintf("fa-%s-%04d", h.name, h.seq)
	h.mu.Unlock()
	r, err := h.p.Register(context.Background(), forge.RunnerSpec{Name: name, Labels: []string{"self-hosted", "fa-small"}, Guest: guest})
	if err != nil {
		h.mu.Lock()
		h.errs = append(h.errs, err)
		h.live--
		h.mu.Unlock()
		return
	}
	h.mu.Lock()
	h.started++
	h.mu.Unlock()
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		err := githubdouble.RunStandIn(ctx, githubdouble.StandIn{JIT: strings.TrimPrefix(r.Guest.Env[0], github.JITConfigEnv+"="), Out: io.Discard})
		rerr := h.p.Remove(context.Background(), r.RunnerRef)
		h.mu.Lock()
		defer h.mu.Unlock()
		h.live--
		for _, j := range h.e.d.Jobs() {
			if j.RunnerName == name {
				h.ran = append(h.ran, j.ID)
			}
		}
		if err != nil {
			h.errs = append(h.errs, fmt.Errorf("stand-in %s: %w", name, err))
		}
		if rerr != nil {
			h.errs = append(h.errs, rerr)
		}
	}()
}

// runUntil steps the hosts until every job is completed.
func runUntil(t *testing.T, e *env, hosts ...*host) {
	t.Helper()
	runUntilExcept(t, e, 0, hosts...)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func sessions(e *env) int {
	n := 0
	for _, s := range e.d.ScaleSets() {
		if s.Session {
			n++
		}
	}
	return n
}

// A scale-set pool creates its scale set (name from pool and host,
// labels and group from the pool), listens, turns GitHub's assignment
// into queued jobs, gives each VM a JIT runner of the scale set, and
// leaves no runner and no session once stopped; its scale set stays
// until deleted explicitly.
func TestScaleSetDemandRunsJobs(t *testing.T) {
	e := scaleSetEnv(t, envOptions{})
	h := newHost(t, e, e.app(), "h1", 3)
	waitFor(t, "a session", func() bool { return sessions(e) == 1 })
	sets := e.d.ScaleSets()
	if len(sets) != 1 || sets[0].Name != "small-h1" || !slices.Equal(sets[0].Labels, []string{"self-hosted", "fa-small"}) || sets[0].Group != 1 {
		t.Fatalf("scale sets: %+v", sets)
	}
	if sets[0].MaxCapacity != 0 && sets[0].MaxCapacity != 3 {
		t.Fatalf("max capacity %d, want the pool's 3", sets[0].MaxCapacity)
	}
	for range 5 {
		e.d.QueueJob("acme/widgets", "self-hosted", "fa-small")
	}
	other := e.d.QueueJob("acme/widgets", "self-hosted", "gpu") // no scale set offers gpu
	runUntilExcept(t, e, other.ID, h)
	if len(h.errs) > 0 {
		t.Fatalf("errors: %v", h.errs)
	}
	if h.started != 5 || len(h.ran) != 5 {
		t.Fatalf("VMs started %d, jobs run %d; want 5 and 5", h.started, len(h.ran))
	}
	for _, rep := range e.d.Reports() {
		if !rep.Issued {
			t.Errorf("runner %s ran with a JIT configuration the double did not issue it", rep.RunnerName)
		}
	}
	if got := e.d.ScaleSets()[0].MaxCapacity; got != 3 {
		t.Errorf("max capacity polled %d, want 3", got)
	}
	if rs := e.d.Runners(); len(rs) != 0 {
		t.Errorf("runners left: %+v", rs)
	}
	h.p.NotifyQueue(nil)
	waitFor(t, "the session deleted", func() bool { return sessions(e) == 0 })
	if len(e.d.ScaleSets()) != 1 {
		t.Fatal("stopping the listener deleted the scale set")
	}
	if j, _ := h.p.QueuedJobs(context.Background()); len(j) != 0 {
		t.Errorf("queued after the jobs ran: %v", j)
	}
	if err := h.p.DeleteScaleSet(context.Background()); err != nil {
		t.Fatal(err)
	}
	if sets := e.d.ScaleSets(); len(sets) != 0 {
		t.Errorf("scale sets after DeleteScaleSet: %+v", sets)
	}
	e.noSecretsLogged()
}

// runUntilExcept is runUntil for all jobs but except (0: none), left
// queued.
func runUntilExcept(t *testing.T, e *env, except int64, hosts ...*host) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		done := true
		for _, j := range e.d.Jobs() {
			done = done && (j.Status == "completed" || j.ID == except)
		}
		if done {
			for _, h := range hosts {
				h.wg.Wait()
			}
			return
		}
		for _, h := range hosts {
			h.step()
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("jobs not all completed: %+v; log:\n%s", e.d.Jobs(), e.log.String())
}

// A session a previous run left (its listener died without deleting it)
// is waited out with backoff; then the pool listens and jobs run.
func TestScaleSetSessionConflictWaitedOut(t *testing.T) {
	e := scaleSetEnv(t, envOptions{sessionIdle: 1500 * time.Millisecond, pats: []string{"ghp_prev"}})
	// The previous run: it made the scale set and a session, then died.
	prev, err := scaleset.NewClientWithPersonalAccessToken(scaleset.NewClientWithPersonalAccessTokenConfig{
		GitHubConfigURL: e.srv.URL + "/acme", PersonalAccessToken: "ghp_prev"})
	if err != nil {
		t.Fatal(err)
	}
	set, err := prev.CreateRunnerScaleSet(context.Background(), &scaleset.RunnerScaleSet{Name: "small-h1", RunnerGroupID: 1,
		Labels: []scaleset.Label{{Name: "self-hosted"}, {Name: "fa-small"}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := prev.MessageSessionClient(context.Background(), set.ID, "h1"); err != nil {
		t.Fatal(err)
	}
	h := newHost(t, e, e.app(), "h1", 2)
	waitFor(t, "the conflict logged", func() bool { return strings.Contains(e.log.String(), "waiting it out") })
	waitFor(t, "the new session", func() bool { return strings.Contains(e.log.String(), "scale set listening") })
	if n := len(e.d.ScaleSets()); n != 1 {
		t.Fatalf("%d scale sets: the restart made a new one instead of taking its own", n)
	}
	e.d.QueueJob("acme/widgets", "self-hosted", "fa-small")
	runUntil(t, e, h)
	if h.started != 1 || len(h.ran) != 1 || len(h.errs) > 0 {
		t.Fatalf("started %d, ran %d, errors %v", h.started, len(h.ran), h.errs)
	}
}

// Faults of the scale-set service (5xx, an expired admin and message
// token, answers lost after acting) are lived through: every job runs in
// a VM of its own, no runner and no session is left.
func TestScaleSetFaults(t *testing.T) {
	// Admin tokens live 62s: the client refreshes them 60s early, so
	// about every call after the first two seconds.
	e := scaleSetEnv(t, envOptions{adminTTL: 62 * time.Second, sessionIdle: 2 * time.Second})
	h := newHost(t, e, e.app(), "h1", 3)
	waitFor(t, "a session", func() bool { return sessions(e) == 1 })
	e.d.FailScaleSetCalls(3)
	for range 3 {
		e.d.QueueJob("acme/widgets", "self-hosted", "fa-small")
	}
	runUntil(t, e, h)
	e.d.ExpireMessageTokens()
	e.d.LoseScaleSetAnswers(2)
	for range 2 {
		e.d.QueueJob("acme/widgets", "self-hosted", "fa-small")
	}
	runUntil(t, e, h)
	// A revoked admin token: the session cannot even be deleted; the
	// driver takes a new token, waits the old session out, listens.
	e.d.ExpireAdminTokens()
	for range 3 {
		e.d.QueueJob("acme/widgets", "self-hosted", "fa-small")
	}
	runUntil(t, e, h)
	f := e.d.ScaleSetFaults()
	if f["500"] != 3 || f["lost"] != 2 {
		t.Fatalf("faults served: %v", f)
	}
	if len(h.ran) != 8 || h.started != 8 {
		t.Fatalf("jobs run %d, VMs started %d, want 8 (errors %v)", len(h.ran), h.started, h.errs)
	}
	seen := map[int64]bool{}
	for _, j := range h.ran {
		if seen[j] {
			t.Errorf("job %d ran twice", j)
		}
		seen[j] = true
	}
	waitFor(t, "no runner left", func() bool { return len(e.d.Runners()) == 0 })
	h.p.NotifyQueue(nil)
	waitFor(t, "no session left", func() bool { return sessions(e) == 0 })
	e.noSecretsLogged()
}

// Two hosts, each with its own scale set offering the same labels, share
// the jobs as GitHub assigns them: every job runs once, VMs started equal
// jobs run, and each host ran some.
func TestScaleSetTwoHosts(t *testing.T) {
	e := scaleSetEnv(t, envOptions{})
	c1, c2 := e.app(), e.app()
	h1 := newHost(t, e, c1, "h1", 2)
	h2 := newHost(t, e, c2, "h2", 2)
	waitFor(t, "two sessions", func() bool { return sessions(e) == 2 })
	for range 12 {
		e.d.QueueJob("acme/widgets", "self-hosted", "fa-small")
	}
	runUntil(t, e, h1, h2)
	if len(h1.errs)+len(h2.errs) > 0 {
		t.Fatalf("errors: %v %v", h1.errs, h2.errs)
	}
	ran := append(append([]int64(nil), h1.ran...), h2.ran...)
	slices.Sort(ran)
	if len(ran) != 12 || len(slices.Compact(ran)) != 12 {
		t.Fatalf("jobs run: %v", ran)
	}
	if h1.started+h2.started != 12 {
		t.Errorf("VMs started %d+%d, jobs run 12", h1.started, h2.started)
	}
	if len(h1.ran) == 0 || len(h2.ran) == 0 {
		t.Errorf("one host ran every job: %d and %d", len(h1.ran), len(h2.ran))
	}
	// Shutting down: Quiesce returns once the sessions are deleted.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, c := range []*github.Client{c1, c2} {
		if err := c.Quiesce(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if n := sessions(e); n != 0 {
		t.Errorf("%d sessions left after Quiesce", n)
	}
	if n := len(e.d.ScaleSets()); n != 2 {
		t.Errorf("%d scale sets after Quiesce, want both kept", n)
	}
}

// A scale-set pool takes its demand from its scale set only: a webhook
// delivery for a job of its scope is not told to it (GitHub may assign
// that job to another host's scale set) and is not in its queue.
func TestScaleSetPoolIgnoresWebhooks(t *testing.T) {
	payloads := examplePayloads(t)
	c, err := github.New(github.Options{Name: "github", URL: "http://127.0.0.1:1/api/v3", Token: "ghp_x", WebhookSecret: hookSecret,
		PollInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	p, err := c.Pool(github.PoolOptions{Scope: github.Scope{Kind: "repo", Owner: "Codertocat", Repo: "Hello-World"},
		Labels: []string{"Ubuntu-Latest"}, Demand: github.DemandScaleSet, PoolName: "small", HostID: "h1", MaxRunners: 2, ScaleSet: fastScaleSet})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var told []forge.QueueChange
	p.NotifyQueue(func(ch forge.QueueChange) {
		mu.Lock()
		defer mu.Unlock()
		told = append(told, ch)
	})
	defer p.NotifyQueue(nil)
	body := payloads[helloQueued]
	r := httptest.NewRequest(http.MethodPost, "/webhooks/github", strings.NewReader(string(body)))
	r.Header.Set("X-GitHub-Event", "workflow_job")
	r.Header.Set("X-GitHub-Delivery", "d-1")
	r.Header.Set("X-Hub-Signature-256", githubdouble.SignPayload(hookSecret, body))
	w := httptest.NewRecorder()
	c.ServeWebhook(w, r, func() {})
	if w.Code != http.StatusOK {
		t.Fatalf("delivery: %d %s", w.Code, w.Body)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(told) != 0 {
		t.Errorf("a webhook's job was told to a scale-set pool: %+v", told)
	}
	if jobs, err := p.QueuedJobs(context.Background()); err != nil || len(jobs) != 0 {
		t.Errorf("queued %v, %v; want none", jobs, err)
	}
}

// The queue is the jobs assigned to the scale set that no runner runs
// yet: a job that started leaves it (its VM is busy, not one to start),
// while a job still waiting stays.
func TestScaleSetRunningJobsAreNotQueued(t *testing.T) {
	e := scaleSetEnv(t, envOptions{})
	h := newHost(t, e, e.app(), "h1", 3)
	waitFor(t, "a session", func() bool { return sessions(e) == 1 })
	queued := func() int { j, _ := h.p.QueuedJobs(context.Background()); return len(j) }
	a := e.d.QueueJob("acme/widgets", "self-hosted", "fa-small")
	e.d.QueueJob("acme/widgets", "self-hosted", "fa-small")
	waitFor(t, "two queued", func() bool { return queued() == 2 })
	e.d.SetJobStatus(a.ID, "in_progress", "")
	waitFor(t, "the started job out of the queue", func() bool { return queued() == 1 })
	time.Sleep(500 * time.Millisecond) // a later message must not put it back
	if n := queued(); n != 1 {
		t.Fatalf("queued %d with one job running and one waiting, want 1", n)
	}
	e.d.SetJobStatus(a.ID, "completed", "success")
	time.Sleep(500 * time.Millisecond)
	if n := queued(); n != 1 {
		t.Fatalf("queued %d after the running job completed, want the waiting 1", n)
	}
}

// A message poll GitHub holds open longer than the forge connection's
// wait for headers (30s; GitHub holds a poll about 50s) is not cut off:
// the session keeps listening and a job queued later is told.
func TestScaleSetPollOutlastsHeaderTimeout(t *testing.T) {
	e := scaleSetEnv(t, envOptions{messageWait: 1200 * time.Millisecond})
	c := e.app()
	github.SetResponseHeaderTimeout(c, 250*time.Millisecond)
	h := newHost(t, e, c, "h1", 2)
	waitFor(t, "a session", func() bool { return sessions(e) == 1 })
	time.Sleep(3 * time.Second) // two polls held past the header timeout
	if strings.Contains(e.log.String(), "scale set listener stopped") {
		t.Fatalf("a held poll stopped the listener; log:\n%s", e.log.String())
	}
	e.d.QueueJob("acme/widgets", "self-hosted", "fa-small")
	waitFor(t, "the job told queued", func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return len(h.queued) == 1
	})
}

// Two orgs under one App: a scale-set pool whose own installation_id
// differs from the forge's (another org's) registers with the pool's.
func TestScaleSetUsesPoolInstallation(t *testing.T) {
	e, acme := scaleSetEnvInst(t, envOptions{})
	other := e.d.AddInstallation("Organization", "globex")
	c := e.app(func(o *github.Options) { o.InstallationID = other })
	p := e.pool(c, github.PoolOptions{Scope: github.Scope{Kind: "org", Org: "acme"}, Labels: []string{"self-hosted", "fa-small"},
		Demand: github.DemandScaleSet, PoolName: "small", HostID: "h1", MaxRunners: 2, ScaleSet: fastScaleSet, InstallationID: acme})
	p.NotifyQueue(func(forge.QueueChange) {})
	t.Cleanup(func() { p.NotifyQueue(nil) })
	waitFor(t, "a session", func() bool { return sessions(e) == 1 })
	r, err := p.Register(context.Background(), forge.RunnerSpec{Name: "vm-1"})
	if err != nil {
		t.Fatalf("register with the pool's installation: %v", err)
	}
	if rs := e.d.Runners(); len(rs) != 1 || rs[0].Name != "vm-1" {
		t.Fatalf("runners %+v after registering %s", rs, r.Name)
	}
}

// delete-scaleset tells the pool's queued slots gone, and a VM started
// for a slot told before refuses to register rather than create the
// scale set again.
func TestScaleSetDeleteClearsQueue(t *testing.T) {
	e := scaleSetEnv(t, envOptions{})
	h := newHost(t, e, e.app(), "h1", 3)
	waitFor(t, "a session", func() bool { return sessions(e) == 1 })
	for range 2 {
		e.d.QueueJob("acme/widgets", "self-hosted", "fa-small")
	}
	waitFor(t, "two slots told", func() bool { h.mu.Lock(); defer h.mu.Unlock(); return len(h.queued) == 2 })
	if err := h.p.DeleteScaleSet(context.Background()); err != nil {
		t.Fatal(err)
	}
	h.mu.Lock()
	left := len(h.queued)
	h.mu.Unlock()
	if left != 0 {
		t.Errorf("slots still told queued after the delete: %d", left)
	}
	if j, _ := h.p.QueuedJobs(context.Background()); len(j) != 0 {
		t.Errorf("queued after the delete: %v", j)
	}
	_, err := h.p.Register(context.Background(), forge.RunnerSpec{Name: "vm-stale"})
	if !errors.Is(err, github.ErrScaleSetDeleted) || !errors.Is(err, forge.ErrDemandSourceDeleted) {
		t.Errorf("register after the delete: %v, want ErrScaleSetDeleted, a forge.ErrDemandSourceDeleted", err)
	}
	if sets := e.d.ScaleSets(); len(sets) != 0 {
		t.Errorf("scale sets after the delete and a register: %+v", sets)
	}
}

// A delete-scaleset that fails leaves the pool listening: a job queued
// after it is told.
func TestScaleSetFailedDeleteListensAgain(t *testing.T) {
	e := scaleSetEnv(t, envOptions{sessionIdle: 1500 * time.Millisecond})
	h := newHost(t, e, e.app(), "h1", 3)
	waitFor(t, "a session", func() bool { return sessions(e) == 1 })
	e.d.FailScaleSetCalls(1000)
	if err := h.p.DeleteScaleSet(context.Background()); err == nil {
		t.Fatal("delete succeeded through failing calls")
	}
	e.d.FailScaleSetCalls(0)
	if len(e.d.ScaleSets()) != 1 {
		t.Fatal("scale set gone after a failed delete")
	}
	e.d.QueueJob("acme/widgets", "self-hosted", "fa-small")
	waitFor(t, "the job told queued", func() bool { h.mu.Lock(); defer h.mu.Unlock(); return len(h.queued) == 1 })
}

// While the scale-set client is being made (finding the App's
// installation, which GitHub answers slowly here), the pool's queue
// answers at once: no network call holds the lock its readers take.
func TestScaleSetQueueAnswersDuringLookup(t *testing.T) {
	e := scaleSetEnv(t, envOptions{})
	e.slow(2 * time.Second)
	t.Cleanup(func() { e.slow(0) })
	h := newHost(t, e, e.app(), "h1", 2) // no installation_id: looked up
	time.Sleep(300 * time.Millisecond)   // the lookup is under way
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := h.p.QueuedJobs(ctx); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 500*time.Millisecond {
		t.Errorf("QueuedJobs took %v while the installation was looked up", took)
	}
}

// A Register that found no scale set and is about to create one, racing
// delete-scaleset, cannot create the deleted scale set again: the delete
// waits for it, and deletes what it made.
func TestScaleSetDeleteRacingRegister(t *testing.T) {
	e, p, registered, release := registerStalledAtCreate(t)
	ctx := context.Background()
	deleted := make(chan error, 1)
	go func() { deleted <- p.DeleteScaleSet(ctx) }()
	select {
	case err := <-deleted: // the delete ran past the register under way
		deleted <- err
	case <-time.After(500 * time.Millisecond):
	}
	close(release)
	if err := <-deleted; err != nil {
		t.Fatalf("delete: %v", err)
	}
	<-registered
	if sets := e.d.ScaleSets(); len(sets) != 0 {
		t.Fatalf("scale sets after delete-scaleset: %+v", sets)
	}
	if _, err := p.Register(ctx, forge.RunnerSpec{Name: "vm-2"}); !errors.Is(err, github.ErrScaleSetDeleted) {
		t.Fatalf("register after the delete: %v, want ErrScaleSetDeleted", err)
	}
	if sets := e.d.ScaleSets(); len(sets) != 0 {
		t.Fatalf("scale sets after a register following the delete: %+v", sets)
	}
}

// A delete-scaleset waits for a register under way in the network only
// as long as its caller does: with a short context it returns that
// context's error promptly, the scale set stays, and the register
// completes once its network answers.
func TestScaleSetDeleteHonoursContextWhileRegisterStalls(t *testing.T) {
	e, p, registered, release := registerStalledAtCreate(t)
	released := false
	defer func() {
		if !released {
			close(release)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	deleted := make(chan error, 1)
	go func() { deleted <- p.DeleteScaleSet(ctx) }()
	select {
	case err := <-deleted:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("delete while a register stalls: %v, want the context's deadline", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("delete-scaleset still waiting for the stalled register 10s after its context ended")
	}
	released = true
	close(release)
	if err := <-registered; err != nil {
		t.Fatalf("register after the abandoned delete: %v", err)
	}
	if sets := e.d.ScaleSets(); len(sets) != 1 {
		t.Fatalf("scale sets after an abandoned delete: %+v, want the one", sets)
	}
	// The gate is free again: a delete with time to spare deletes.
	if err := p.DeleteScaleSet(context.Background()); err != nil {
		t.Fatalf("delete after the register: %v", err)
	}
	if sets := e.d.ScaleSets(); len(sets) != 0 {
		t.Fatalf("scale sets after delete-scaleset: %+v", sets)
	}
}

// registerStalledAtCreate starts a register in a new scale-set pool
// and returns once it stalls in the network, just before creating the
// scale set; closing release lets it go on, registered its outcome.
func registerStalledAtCreate(t *testing.T) (e *env, p *github.Pool, registered chan error, release chan struct{}) {
	t.Helper()
	e = scaleSetEnv(t, envOptions{})
	p = e.pool(e.app(), github.PoolOptions{Scope: github.Scope{Kind: "org", Org: "acme"}, Labels: []string{"self-hosted", "fa-small"},
		Demand: github.DemandScaleSet, PoolName: "small", HostID: "h1", MaxRunners: 2, ScaleSet: fastScaleSet})
	reached, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	github.SetBeforeScaleSetCreate(p, func() {
		once.Do(func() { close(reached); <-release })
	})
	registered = make(chan error, 1)
	go func() {
		_, err := p.Register(context.Background(), forge.RunnerSpec{Name: "vm-1"})
		registered <- err
	}()
	select {
	case <-reached:
	case err := <-registered:
		t.Fatalf("register ended before creating the scale set: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("register never reached the scale set's creation")
	}
	return e, p, registered, release
}

// The daemon's drain stops a pool's demand (NotifyQueue(nil)) before it
// quiesces the client: Quiesce still waits for the stopped listener's
// session to be deleted, or the next start meets GitHub's session
// conflict until that session expires.
func TestQuiesceAfterNotifyQueueNilWaitsForTheSessionDeleted(t *testing.T) {
	e := scaleSetEnv(t, envOptions{})
	c := e.app()
	h := newHost(t, e, c, "h1", 1)
	waitFor(t, "a session", func() bool { return sessions(e) == 1 })
	e.slow(time.Second) // the session's DELETE takes a while
	h.p.NotifyQueue(nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := c.Quiesce(ctx); err != nil {
		t.Fatal(err)
	}
	if n := sessions(e); n != 0 {
		t.Errorf("%d sessions left when Quiesce returned", n)
	}
}
