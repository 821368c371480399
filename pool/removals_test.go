package pool

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/vmstate"
)

func (f *fakeForge) setRemoveErr(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.removeErr = err
}

var errForgeDown = errors.New("forge unreachable")

// onlyRecord checks that a VM whose runner removal is pending is kept on
// disk as its record alone, phase Deregistering, without the host
// resources it no longer holds.
func onlyRecord(t *testing.T, h *harness, id string) {
	t.Helper()
	recs, err := h.store.List()
	if err != nil || len(recs) != 1 {
		t.Fatalf("records: %v, %v; want the one of vm %s", recs, err, id)
	}
	r := recs[0]
	if r.ID != id || r.Phase != vmstate.Deregistering || r.RunnerID == "" || r.TAP != "" || r.Address != "" || r.PID != 0 {
		t.Fatalf("record kept = %+v, want vm %s deregistering with its runner only", r, id)
	}
	entries, err := os.ReadDir(h.store.Dir(id))
	if err != nil || len(entries) != 0 {
		t.Fatalf("vm directory holds %v (%v), want nothing (the record is in the store's log)", entries, err)
	}
}

// A VM torn down while its forge is unreachable: the removal of its
// runner fails past teardown's retries, but is not dropped; the VM's
// record stays (emptied of its boot files) and the manager, still running,
// removes the runner once the forge answers again, then the record.
func TestRunnerRemovalThatFailsIsRetriedUntilTheForgeConfirms(t *testing.T) {
	h := newHarness(t, 1, 1, guestRunsOneJob, nil)
	eventually(t, 2*time.Second, "an idle VM", func() bool { return h.m.Phases()[vmstate.Idle] == 1 })
	id := h.m.VMs()[0].ID
	if err := os.WriteFile(h.store.Dir(id)+"/initramfs.cpio", []byte("runner credential"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := h.m.SetPaused("p", true); err != nil { // no replacement
		t.Fatal(err)
	}
	h.forge.setRemoveErr(errForgeDown)
	if err := h.m.Kill(id); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, "the VM gone", func() bool { return len(h.m.VMs()) == 0 })
	if n := h.forge.runnerCount(); n != 1 {
		t.Fatalf("%d runners at the unreachable forge, want its runner still there", n)
	}
	onlyRecord(t, h, id)
	if got := h.m.PendingRemovals(); len(got) != 1 || got[0] != "fa-test-"+id {
		t.Fatalf("pending removals %v", got)
	}
	if st := h.m.Pools(); len(st) != 1 || st[0].RemovalsPending != 1 {
		t.Fatalf("pool status %+v, want 1 removal pending", st)
	}
	if h.net.Count() != 0 {
		t.Fatalf("taps left while the removal is pending: %v", h.net.TAPs)
	}

	h.forge.setRemoveErr(nil)
	eventually(t, 20*time.Second, "the runner removed once the forge answers", func() bool {
		recs, _ := h.store.List()
		return h.forge.runnerCount() == 0 && len(recs) == 0
	})
	if got := h.m.PendingRemovals(); len(got) != 0 {
		t.Fatalf("pending removals after the forge confirmed: %v", got)
	}
	h.assertNothingLeft(t)
}

// A drain that ends while the forge is unreachable leaves the runner's
// removal, on disk, for the next start, which retries it: at once, and
// again until the forge answers.
func TestDrainDuringAnOutageLeavesTheRemovalForTheNextStart(t *testing.T) {
	h := newHarness(t, 1, 1, guestRunsOneJob, nil)
	eventually(t, 2*time.Second, "an idle VM", func() bool { return h.m.Phases()[vmstate.Idle] == 1 })
	id := h.m.VMs()[0].ID
	h.forge.setRemoveErr(errForgeDown)
	if err := h.drain(t, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	onlyRecord(t, h, id)

	// The next start, the forge still unreachable: the record stays.
	next, err := New(h.m.d)
	if err != nil {
		t.Fatal(err)
	}
	if err := next.Recover(context.Background(), Leftovers{}); err != nil {
		t.Fatal(err)
	}
	onlyRecord(t, h, id)
	if got := next.PendingRemovals(); len(got) != 1 {
		t.Fatalf("pending removals after the restart: %v", got)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { next.Run(ctx); close(done) }()
	defer func() {
		cancel()
		<-done
		// The VM the next start made for min_idle ends before the test's
		// directories are removed.
		dctx, dcancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer dcancel()
		_ = next.Drain(dctx)
	}()
	h.forge.setRemoveErr(nil)
	eventually(t, 20*time.Second, "the runner removed by the next start", func() bool {
		recs, _ := h.store.List()
		return h.forge.runnerCount() == 0 && len(recs) == 0
	})
}
