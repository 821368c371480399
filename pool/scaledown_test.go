package pool

import (
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/config"
	"github.com/nixos-fireactions/nixos-fireactions/forge"
	"github.com/nixos-fireactions/nixos-fireactions/vmstate"
)

// surplusIdleVM makes one idle VM that is surplus once its job is
// cancelled: the harness's pool keeps none idle, and the VM was started
// for a job that is then withdrawn.
func surplusIdleVM(t *testing.T, h *harness) string {
	t.Helper()
	h.forge.mu.Lock()
	h.forge.hold = true
	h.forge.mu.Unlock()
	h.forge.enqueue("withdrawn")
	eventually(t, 2*time.Second, "an idle VM", func() bool { return h.m.Phases()[vmstate.Idle] == 1 })
	return h.m.VMs()[0].ID
}

func withdrawJobs(h *harness) {
	h.forge.mu.Lock()
	h.forge.queue = nil
	h.forge.mu.Unlock()
}

// Scale-down removes a surplus idle VM's runner at the forge before it
// ends the VM: a job the forge hands out meanwhile goes to a runner that
// still runs, or to none.
func TestScaleDownRemovesTheRunnerBeforeEndingTheVM(t *testing.T) {
	h := newHarness(t, 0, 2, guestRunsOneJob, func(p *config.Pool) { p.Timeouts.Idle = 20 * time.Millisecond })
	surplusIdleVM(t, h)
	var mu sync.Mutex
	alive := -1 // VMs running at the first removal
	h.forge.mu.Lock()
	h.forge.onRemove = func(forge.RunnerRef) {
		h.hv.mu.Lock()
		defer h.hv.mu.Unlock()
		mu.Lock()
		defer mu.Unlock()
		if alive < 0 {
			alive = h.hv.running
		}
	}
	h.forge.mu.Unlock()
	withdrawJobs(h)
	eventually(t, 2*time.Second, "the surplus VM gone", func() bool { return len(h.m.VMs()) == 0 })
	mu.Lock()
	defer mu.Unlock()
	if alive != 1 {
		t.Fatalf("%d VMs running when the surplus VM's runner was removed, want 1 (the VM ended after its runner)", alive)
	}
	h.assertNothingLeft(t)
}

// A surplus idle VM whose runner the forge does not remove (one that just
// took a job is busy, or the forge is down) is kept, not ended: it goes
// once the forge has removed its runner.
func TestSurplusVMWhoseRunnerTheForgeKeepsIsNotEnded(t *testing.T) {
	h := newHarness(t, 0, 2, guestRunsOneJob, func(p *config.Pool) { p.Timeouts.Idle = 20 * time.Millisecond })
	id := surplusIdleVM(t, h)
	h.forge.setRemoveErr(errors.New("runner is busy"))
	withdrawJobs(h)
	time.Sleep(300 * time.Millisecond) // many reconciles past the idle timeout
	if r, err := h.m.VM(id); err != nil || r.Phase != vmstate.Idle {
		t.Fatalf("surplus vm whose runner the forge kept: %+v, %v; want it still idle", r, err)
	}
	h.forge.setRemoveErr(nil)
	eventually(t, 2*time.Second, "the surplus VM gone", func() bool { return len(h.m.VMs()) == 0 })
	h.assertNothingLeft(t)
}

// The job timeout runs from the moment the runner took its job: a VM
// waiting idle (kept by min_idle) is not timed out by it. Never known
// busy, it is recycled at ready + timeouts.job instead (see
// TestJobWhoseStartReportIsLostEndsAtReadyPlusTheJobTimeout), which is
// not counted as a job timeout, and a fresh VM takes its place.
func TestIdleVMIsRecycledNotTimedOutAtTheJobTimeout(t *testing.T) {
	obs := &reasonObserver{}
	h := newHarnessAt(t, filepath.Join(t.TempDir(), "vms"), 1, 1, guestRunsOneJob,
		func(p *config.Pool) { p.Timeouts.Job = 100 * time.Millisecond }, slog.New(slog.NewTextHandler(io.Discard, nil)), obs, nil)
	eventually(t, 2*time.Second, "an idle VM", func() bool { return h.m.Phases()[vmstate.Idle] == 1 })
	first := h.m.VMs()[0].ID
	eventually(t, 3*time.Second, "the idle VM recycled and replaced", func() bool {
		vms := h.m.VMs()
		return len(vms) == 1 && vms[0].ID != first && vms[0].Phase == vmstate.Idle
	})
	if got := obs.reasons(); len(got) == 0 || slices.Contains(got, ReasonJobTimeout) || got[0] != ReasonRecycled {
		t.Fatalf("failure reasons %v: want %q, never %q", got, ReasonRecycled, ReasonJobTimeout)
	}
}

// reasonObserver records the reason of every VM that failed.
type reasonObserver struct {
	nopObserver
	mu  sync.Mutex
	got []string
}

func (o *reasonObserver) VMFailed(_, reason string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.got = append(o.got, reason)
}

func (o *reasonObserver) reasons() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.got)
}

// A busy VM whose job runs past the job timeout is ended, and its job
// failed at the forge with the timeout as the reason, in words of the
// host's making (no host error text).
func TestBusyVMEndsAtTheJobTimeout(t *testing.T) {
	h := newHarness(t, 0, 1, guestRunsOneJob, func(p *config.Pool) { p.Timeouts.Job = 200 * time.Millisecond })
	h.hv.jobTime = time.Hour
	h.forge.enqueue("endless")
	eventually(t, 2*time.Second, "the VM busy", func() bool { return h.m.Phases()[vmstate.Busy] == 1 })
	eventually(t, 3*time.Second, "the busy VM ended at its job timeout", func() bool { return len(h.m.VMs()) == 0 })
	if got := h.forge.failedJobs(); got["endless"] != "job timeout (200ms)" {
		t.Errorf("jobs failed at the forge: %q, want endless with reason %q", got, "job timeout (200ms)")
	}
	h.forge.mu.Lock()
	defer h.forge.mu.Unlock()
	if len(h.forge.finished) != 0 {
		t.Fatal("the endless job finished")
	}
}
