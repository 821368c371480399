package pool

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
	"github.com/nixos-fireactions/nixos-fireactions/config"
	"github.com/nixos-fireactions/nixos-fireactions/vmm"
	"github.com/nixos-fireactions/nixos-fireactions/vmstate"
)

// leaveBootingVM stops the harness's manager and leaves what a crash
// leaves of VM 0000000000b1 while it booted: its record (phase booting, agent token
// "tok"), its TAP and, when runnerBusy is not nil, its runner at the forge
// (busy or not). The machine is its monitor, still running.
func leaveBootingVM(t *testing.T, h *harness, runnerBusy *bool) *fakeMachine {
	t.Helper()
	h.stop()
	<-h.done
	rec := &vmstate.Record{ID: "0000000000b1", Pool: "p", Phase: vmstate.Booting, PID: 4343, TAP: "fab1", Address: "10.200.0.9",
		MAC: "02:00:00:00:00:09", RunnerID: "6", RunnerName: "fa-test-0000000000b1", AgentToken: "tok"}
	if err := h.store.Create(rec); err != nil {
		t.Fatal(err)
	}
	h.net.TAPs["fab1"] = true
	if runnerBusy != nil {
		h.forge.runners["6"] = &fakeRunner{ref: forgeRef("6", "fa-test-0000000000b1"), busy: *runnerBusy}
	}
	machine := &fakeMachine{done: make(chan struct{}), kill: make(chan struct{})}
	t.Cleanup(func() {
		select {
		case <-machine.done:
		default:
			close(machine.done)
		}
	})
	return machine
}

// recoverAndRun runs Recover with machine as every adopted monitor (and a
// test failure for every kill), then the manager again.
func recoverAndRun(t *testing.T, h *harness, machine vmm.Machine) {
	t.Helper()
	err := h.m.Recover(context.Background(), Leftovers{
		Adopt: func(id string, pid int) (vmm.Machine, error) { return machine, nil },
		KillVM: func(_ context.Context, id string, pid int) error {
			t.Errorf("killed %s/%d instead of adopting it", id, pid)
			return nil
		},
		TAPs: func() ([]string, error) { return []string{"fab1"}, nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.stop, h.done = cancel, make(chan struct{})
	go func() { h.m.Run(ctx); close(h.done) }()
}

// A crash while a VM booted, and its runner took a job while no
// orchestrator ran (its ready and job reports were lost): the restart
// adopts the VM instead of killing it, learns from the forge that its
// runner is busy, and the job finishes in it.
func TestRecoverAdoptsABootingVMWhoseRunnerTookAJob(t *testing.T) {
	h := newHarness(t, 0, 1, guestRunsOneJob, nil)
	busy := true
	machine := leaveBootingVM(t, h, &busy)
	recoverAndRun(t, h, machine)
	eventually(t, 2*time.Second, "the adopted VM busy", func() bool {
		r, err := h.m.VM("0000000000b1")
		return err == nil && r.Phase == vmstate.Busy && !r.Ready.IsZero()
	})
	if h.forge.runnerCount() != 1 {
		t.Fatal("the busy runner of the adopted VM was removed")
	}
	if err := h.m.Report("tok", agentproto.Report{VMID: "0000000000b1", Event: agentproto.EventRunnerExited}); err != nil {
		t.Fatal(err)
	}
	h.forge.finish("fa-test-0000000000b1", "j")
	close(machine.done)
	eventually(t, 2*time.Second, "the adopted VM gone after its job", func() bool { return len(h.m.VMs()) == 0 })
	h.assertNothingLeft(t)
}

// An adopted VM still booting whose runner is not up at the forge keeps
// booting, and its agent's reports (token from the record) reach it.
func TestAdoptedBootingVMBecomesReadyOnItsAgentsReport(t *testing.T) {
	h := newHarness(t, 0, 1, guestRunsOneJob, nil)
	machine := leaveBootingVM(t, h, nil)
	recoverAndRun(t, h, machine)
	if r, err := h.m.VM("0000000000b1"); err != nil || r.Phase != vmstate.Booting {
		t.Fatalf("adopted vm = %+v, %v; want booting", r, err)
	}
	if err := h.m.Report("tok", agentproto.Report{VMID: "0000000000b1", Event: agentproto.EventRunnerReady}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Second, "the adopted VM idle", func() bool {
		r, err := h.m.VM("0000000000b1")
		return err == nil && r.Phase == vmstate.Idle
	})
}

// The boot timeout of a VM adopted while booting runs from its record,
// not from the restart: one that has booted for longer already ends at
// once.
func TestAdoptedBootingVMKeepsItsBootTimeout(t *testing.T) {
	h := newHarness(t, 0, 1, guestRunsOneJob, func(p *config.Pool) { p.Timeouts.Boot = time.Second })
	machine := leaveBootingVM(t, h, nil)
	time.Sleep(time.Second) // the record's boot timeout passes
	recoverAndRun(t, h, machine)
	select {
	case <-machine.kill:
	case <-time.After(500 * time.Millisecond):
		t.Fatal("the adopted VM past its boot timeout was not ended at once")
	}
	close(machine.done)
	eventually(t, 2*time.Second, "the VM gone", func() bool { return len(h.m.VMs()) == 0 })
	h.assertNothingLeft(t)
}

// A VM adopted while booting, past its boot timeout, whose runner took a
// job while no orchestrator ran (its agent's reports were lost): the boot
// timeout waits for the forge's listing, which shows the runner busy, so
// the job runs on instead of being killed with its VM.
func TestAdoptedBootingVMPastItsBootTimeoutKeepsTheJobItsRunnerTook(t *testing.T) {
	h := newHarness(t, 0, 1, guestRunsOneJob, func(p *config.Pool) { p.Timeouts.Boot = time.Second })
	busy := true
	machine := leaveBootingVM(t, h, &busy)
	h.forge.listDelay = 200 * time.Millisecond
	time.Sleep(time.Second) // the record's boot timeout passes
	recoverAndRun(t, h, machine)
	eventually(t, 3*time.Second, "the adopted VM busy", func() bool {
		r, err := h.m.VM("0000000000b1")
		return err == nil && r.Phase == vmstate.Busy
	})
	select {
	case <-machine.kill:
		t.Fatal("the VM whose runner took a job was killed at its boot timeout")
	case <-time.After(1500 * time.Millisecond): // past another boot timeout
	}
	if h.forge.runnerCount() != 1 {
		t.Fatal("the busy runner was removed")
	}
}

// A VM whose kill fails at its end (its monitor may still run) and whose
// runner the forge does not take back then: the runner's removal is
// retried in this run until the forge confirms, and the record stays for
// the next start.
func TestRunnerOfAVMNotKnownGoneIsRemovedInThisRun(t *testing.T) {
	h := newHarness(t, 0, 1, guestRunsOneJob, nil)
	busy := false
	machine := leaveBootingVM(t, h, &busy)
	machine.killErr = errors.New("the monitor did not answer its kill")
	recoverAndRun(t, h, machine)
	eventually(t, 2*time.Second, "the adopted VM ready", func() bool {
		r, err := h.m.VM("0000000000b1")
		return err == nil && r.Phase == vmstate.Idle
	})
	h.forge.mu.Lock()
	h.forge.removeErr = errors.New("forge unreachable")
	h.forge.mu.Unlock()
	close(machine.done) // the guest ends; its monitor's kill fails
	eventually(t, 10*time.Second, "the VM gone from the manager (teardown tries the removal 5 times)", func() bool { return len(h.m.VMs()) == 0 })
	if got := h.m.PendingRemovals(); len(got) != 1 || got[0] != "fa-test-0000000000b1" {
		t.Fatalf("pending removals %v, want the runner of the vm not known gone", got)
	}
	h.forge.mu.Lock()
	h.forge.removeErr = nil
	h.forge.mu.Unlock()
	h.m.removeDue(context.Background(), time.Now().Add(time.Hour))
	if h.forge.runnerCount() != 0 || len(h.m.PendingRemovals()) != 0 {
		t.Fatalf("runner left (%d) or removal pending (%v) after the forge confirmed", h.forge.runnerCount(), h.m.PendingRemovals())
	}
	if r, ok := diskRecords(t, h.store)["0000000000b1"]; !ok || r.Phase != vmstate.Failed {
		t.Fatalf("record of the vm not known gone: %+v, %v; want kept, failed", r, ok)
	}
}

// A runner a crash left between its registration and its VM's record,
// while the forge cannot list its runners at the restart: the first pass
// that lists them removes it, instead of leaving it registered until
// some later restart. A runner a VM of this run holds stays (the
// control: the adopted VM's).
func TestLeftoverRunnerRemovedOnceItsForgeListsThem(t *testing.T) {
	h := newHarness(t, 0, 1, guestRunsOneJob, nil)
	busy := false
	machine := leaveBootingVM(t, h, &busy)
	h.forge.mu.Lock()
	h.forge.runners["8"] = &fakeRunner{ref: forgeRef("8", "fa-test-0000000000c1")}
	h.forge.runnersErr = errors.New("forge unreachable")
	h.forge.mu.Unlock()
	err := h.m.Recover(context.Background(), Leftovers{
		Adopt:  func(string, int) (vmm.Machine, error) { return machine, nil },
		KillVM: func(context.Context, string, int) error { return nil },
		TAPs:   func() ([]string, error) { return []string{"fab1"}, nil },
	})
	if err == nil {
		t.Fatal("Recover hid that it could not list the forge's runners")
	}
	h.forge.mu.Lock()
	h.forge.runnersErr = nil
	h.forge.mu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	h.stop, h.done = cancel, make(chan struct{})
	go func() { h.m.Run(ctx); close(h.done) }()
	eventually(t, 10*time.Second, "the leftover runner removed", func() bool {
		h.forge.mu.Lock()
		defer h.forge.mu.Unlock()
		_, left := h.forge.runners["8"]
		return !left
	})
	if h.forge.runnerCount() != 1 {
		t.Fatalf("%d runners left, want the adopted VM's", h.forge.runnerCount())
	}
}
