package pool

import (
	"errors"
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
// waiting idle (kept by min_idle) is not ended by it.
func TestIdleVMIsNotEndedByTheJobTimeout(t *testing.T) {
	h := newHarness(t, 1, 1, guestRunsOneJob, func(p *config.Pool) { p.Timeouts.Job = 50 * time.Millisecond })
	eventually(t, 2*time.Second, "an idle VM", func() bool { return h.m.Phases()[vmstate.Idle] == 1 })
	id := h.m.VMs()[0].ID
	time.Sleep(300 * time.Millisecond) // six job timeouts
	if r, err := h.m.VM(id); err != nil || r.Phase != vmstate.Idle {
		t.Fatalf("idle vm after six job timeouts: %+v, %v", r, err)
	}
	h.hv.mu.Lock()
	defer h.hv.mu.Unlock()
	if h.hv.started != 1 {
		t.Fatalf("%d VMs started: the idle one was ended", h.hv.started)
	}
}

// A busy VM whose job runs past the job timeout is ended.
func TestBusyVMEndsAtTheJobTimeout(t *testing.T) {
	h := newHarness(t, 0, 1, guestRunsOneJob, func(p *config.Pool) { p.Timeouts.Job = 200 * time.Millisecond })
	h.hv.jobTime = time.Hour
	h.forge.enqueue("endless")
	eventually(t, 2*time.Second, "the VM busy", func() bool { return h.m.Phases()[vmstate.Busy] == 1 })
	eventually(t, 3*time.Second, "the busy VM ended at its job timeout", func() bool { return len(h.m.VMs()) == 0 })
	h.forge.mu.Lock()
	defer h.forge.mu.Unlock()
	if len(h.forge.finished) != 0 {
		t.Fatal("the endless job finished")
	}
}
