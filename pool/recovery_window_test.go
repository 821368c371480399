package pool

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
	"github.com/nixos-fireactions/nixos-fireactions/forge"
	"github.com/nixos-fireactions/nixos-fireactions/vmm"
	"github.com/nixos-fireactions/nixos-fireactions/vmstate"
)

// postReport sends rep with token through the agent listener's handler
// and returns the status it answers.
func postReport(t *testing.T, h http.Handler, token string, rep agentproto.Report) int {
	t.Helper()
	body, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	req := httptest.NewRequest(http.MethodPost, agentproto.ReportPath, bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Code
}

// The agent listener runs before Recover. A report from a VM a previous
// run left, arriving before Recover adopted that VM, is refused as
// retryable (503), which the agent sends again; once adopted, the VM
// takes it. Here the VM was booting and its runner took a job while no
// orchestrator ran: its JobStarted, retried, makes it busy. Once Recover
// has returned, a report for a VM no one knows is refused for good (403).
func TestReportArrivingBeforeRecoveryAdoptedItsVMIsRetryable(t *testing.T) {
	h := newHarness(t, 0, 1, guestRunsOneJob, nil)
	machine := leaveBootingVM(t, h, nil)
	agents := h.m.AgentHandler()
	jobStarted := agentproto.Report{VMID: "0000000000b1", Event: agentproto.EventJobStarted, Job: "42"}
	var duringRecovery int
	err := h.m.Recover(context.Background(), Leftovers{
		Adopt: func(id string, pid int) (vmm.Machine, error) {
			// The report comes while the VM is not adopted yet.
			duringRecovery = postReport(t, agents, "tok", jobStarted)
			return machine, nil
		},
		KillVM: func(_ context.Context, id string, pid int) error {
			t.Errorf("killed %s/%d instead of adopting it", id, pid)
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if duringRecovery != http.StatusServiceUnavailable {
		t.Fatalf("report before its VM was adopted answered %d, want 503 (the agent retries)", duringRecovery)
	}
	if err := h.m.Report("tok", agentproto.Report{VMID: "0000000000b2"}); err == nil || err == ErrNotRecovered {
		t.Fatalf("report for an unknown vm after recovery: %v, want refused for good", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.stop, h.done = cancel, make(chan struct{})
	go func() { h.m.Run(ctx); close(h.done) }()

	// The agent's retry.
	if code := postReport(t, agents, "tok", jobStarted); code != http.StatusNoContent {
		t.Fatalf("the retried report answered %d, want 204", code)
	}
	eventually(t, 2*time.Second, "the adopted VM busy with its job", func() bool {
		r, err := h.m.VM("0000000000b1")
		return err == nil && r.Phase == vmstate.Busy && r.Job == "42"
	})
	if code := postReport(t, agents, "tok", agentproto.Report{VMID: "0000000000b2", Event: agentproto.EventJobStarted}); code != http.StatusForbidden {
		t.Fatalf("report for an unknown vm after recovery answered %d, want 403", code)
	}
	if code := postReport(t, agents, "wrong", jobStarted); code != http.StatusForbidden {
		t.Fatalf("report with a wrong token answered %d, want 403", code)
	}
}

// outageForge is the fake forge behind an outage: while down, every
// Remove and Runners call gets no answer until its context ends. The
// wait itself is not spent: a call whose context has a deadline within
// removalCallTimeout fails at once with context.DeadlineExceeded, as it
// would when that deadline passed; a call without such a bound, which
// would hold start-up for as long as the forge stays silent, is counted
// as unbounded.
type outageForge struct {
	*fakeForge
	mu        sync.Mutex
	down      bool
	calls     int // calls while down
	unbounded int // of them, calls without a bound
}

func (f *outageForge) setDown(down bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down = down
}

func (f *outageForge) counts() (calls, unbounded int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls, f.unbounded
}

func (f *outageForge) silent(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.down {
		return nil
	}
	f.calls++
	if d, ok := ctx.Deadline(); !ok || time.Until(d) > removalCallTimeout {
		f.unbounded++
		return fmt.Errorf("forge silent, and the call unbounded: %w", errForgeDown)
	}
	return context.DeadlineExceeded
}

func (f *outageForge) Remove(ctx context.Context, r forge.RunnerRef) error {
	if err := f.silent(ctx); err != nil {
		return err
	}
	return f.fakeForge.Remove(ctx, r)
}

func (f *outageForge) Runners(ctx context.Context, owner forge.Owner) ([]forge.RunnerState, error) {
	if err := f.silent(ctx); err != nil {
		return nil, err
	}
	return f.fakeForge.Runners(ctx, owner)
}

// A restart during a forge outage: several runner removals left pending
// on disk, a VM left without its monitor, a runner of this host no record
// holds. Recover, which runs before systemd hears READY, calls the silent
// forge once, bounded, and not again: the pending removals are queued for
// the retries once the manager runs, not tried in Recover. Once the forge
// answers, every runner and every record goes: the runner no record holds
// too, found by the first pass's listing, since start-up's failed.
func TestRecoverDuringAForgeOutageCallsTheForgeOnceAndBounded(t *testing.T) {
	var o *outageForge
	h := newHarnessForge(t, 0, 1, guestRunsOneJob, nil, slog.New(slog.NewTextHandler(io.Discard, nil)),
		func(f *fakeForge) forge.Forge { o = &outageForge{fakeForge: f}; return o })
	h.stop()
	<-h.done
	for i := range 5 {
		id := fmt.Sprintf("0000000000d%d", i)
		rid := fmt.Sprint(100 + i)
		if err := h.store.Create(&vmstate.Record{ID: id, Pool: "p", Phase: vmstate.Deregistering,
			RunnerID: rid, RunnerName: "fa-test-" + id}); err != nil {
			t.Fatal(err)
		}
		h.forge.runners[rid] = &fakeRunner{ref: forgeRef(rid, "fa-test-"+id)}
	}
	if err := h.store.Create(&vmstate.Record{ID: "0000000000e1", Pool: "p", Phase: vmstate.Idle,
		RunnerID: "200", RunnerName: "fa-test-0000000000e1"}); err != nil {
		t.Fatal(err)
	}
	h.forge.runners["200"] = &fakeRunner{ref: forgeRef("200", "fa-test-0000000000e1")}
	h.forge.runners["201"] = &fakeRunner{ref: forgeRef("201", "fa-test-0000000000e2")} // unrecorded

	o.setDown(true)
	_ = h.m.Recover(context.Background(), Leftovers{}) // the listing fails: an error is expected
	calls, unbounded := o.counts()
	if unbounded != 0 {
		t.Fatalf("recovery made %d forge call(s) without a timeout during the outage", unbounded)
	}
	if calls > 1 {
		t.Fatalf("recovery called the silent forge %d times, want once at most", calls)
	}
	if n := h.forge.runnerCount(); n != 7 {
		t.Fatalf("%d runners at the silent forge, want all 7 still there", n)
	}

	o.setDown(false)
	ctx, cancel := context.WithCancel(context.Background())
	h.stop, h.done = cancel, make(chan struct{})
	go func() { h.m.Run(ctx); close(h.done) }()
	eventually(t, 20*time.Second, "every runner and every record gone once the forge answers", func() bool {
		recs, _ := h.store.List()
		return h.forge.runnerCount() == 0 && len(recs) == 0
	})
}

// gatedForge is the fake forge whose Remove, while gated, tells entered
// and then waits for release, whatever its context says.
type gatedForge struct {
	*fakeForge
	entered chan string
	release chan struct{}
	mu      sync.Mutex
	calls   map[string]int // Remove calls by runner name
}

func (f *gatedForge) Remove(ctx context.Context, r forge.RunnerRef) error {
	f.mu.Lock()
	f.calls[r.Name]++
	f.mu.Unlock()
	f.entered <- r.Name
	<-f.release
	return f.fakeForge.Remove(ctx, r)
}

func (f *gatedForge) removeCalls(name string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[name]
}

// A drain that starts while a pass of the removal retries is still
// waiting for the forge waits for that pass: the runner is removed once,
// by one of them, and its record once.
func TestDrainWaitsForARemovalRetryInFlight(t *testing.T) {
	var g *gatedForge
	h := newHarnessForge(t, 0, 1, guestRunsOneJob, nil, slog.New(slog.NewTextHandler(io.Discard, nil)),
		func(f *fakeForge) forge.Forge {
			g = &gatedForge{fakeForge: f, entered: make(chan string, 4), release: make(chan struct{}), calls: map[string]int{}}
			return g
		})
	h.stop()
	<-h.done
	const id, name = "0000000000f1", "fa-test-0000000000f1"
	if err := h.store.Create(&vmstate.Record{ID: id, Pool: "p", Phase: vmstate.Deregistering,
		RunnerID: "300", RunnerName: name}); err != nil {
		t.Fatal(err)
	}
	h.forge.runners["300"] = &fakeRunner{ref: forgeRef("300", name)}
	if err := h.m.Recover(context.Background(), Leftovers{}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.stop, h.done = cancel, make(chan struct{})
	go func() { h.m.Run(ctx); close(h.done) }()
	select {
	case <-g.entered: // the retry pass waits for the forge
	case <-time.After(10 * time.Second):
		t.Fatal("the pending removal was not retried")
	}
	cancel()
	<-h.done
	drained := make(chan error, 1)
	go func() {
		dctx, dcancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer dcancel()
		drained <- h.m.Drain(dctx)
	}()
	// A drain that does not wait calls Remove again at once, or returns
	// before the pass in flight has ended.
	select {
	case <-g.entered:
	case <-time.After(300 * time.Millisecond):
	}
	select {
	case err := <-drained:
		t.Fatalf("the drain returned (%v) while a removal was still in flight", err)
	default:
	}
	close(g.release)
	if err := <-drained; err != nil {
		t.Fatal(err)
	}
	if n := g.removeCalls(name); n != 1 {
		t.Fatalf("runner removed %d times, want once", n)
	}
	if recs, _ := h.store.List(); len(recs) != 0 || h.forge.runnerCount() != 0 || len(h.m.PendingRemovals()) != 0 {
		t.Fatalf("after the drain: records %v, %d runner(s), pending %v", recs, h.forge.runnerCount(), h.m.PendingRemovals())
	}
}

// A forge that answers, with errors (GitHub refusing to remove a runner
// it thinks busy), is not an outage: Recover goes on asking it, lists its
// runners and keeps each removal it refused for the retries, under a
// record, the unrecorded runner's too.
func TestRecoverKeepsAskingAForgeThatAnswersErrors(t *testing.T) {
	h := newHarness(t, 0, 1, guestRunsOneJob, nil)
	h.stop()
	<-h.done
	for i, id := range []string{"0000000000e1", "0000000000e2"} {
		rid := fmt.Sprint(400 + i)
		if err := h.store.Create(&vmstate.Record{ID: id, Pool: "p", Phase: vmstate.Idle,
			RunnerID: rid, RunnerName: "fa-test-" + id}); err != nil {
			t.Fatal(err)
		}
		h.forge.runners[rid] = &fakeRunner{ref: forgeRef(rid, "fa-test-"+id)}
	}
	h.forge.runners["402"] = &fakeRunner{ref: forgeRef("402", "fa-test-0000000000e3")} // unrecorded
	var asked []string
	h.forge.onRemove = func(r forge.RunnerRef) { asked = append(asked, r.Name) }
	h.forge.setRemoveErr(errForgeDown)
	_ = h.m.Recover(context.Background(), Leftovers{})
	if len(asked) != 3 {
		t.Fatalf("recovery asked the forge to remove %v, want all 3 runners", asked)
	}
	if got := h.m.PendingRemovals(); len(got) != 3 {
		t.Fatalf("pending removals %v, want the 3 the forge refused", got)
	}
}
