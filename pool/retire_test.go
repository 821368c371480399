package pool

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/forge"
	"github.com/nixos-fireactions/nixos-fireactions/vmm"
	"github.com/nixos-fireactions/nixos-fireactions/vmstate"
)

// A forge whose runner credential a job could read (forge.Retirer) has
// the runner retired as soon as the guest reports that its one job
// started: while the job still runs, once, and the VM then ends as usual.
func TestRunnerRetiredAtTheForgeOnceItsJobStarts(t *testing.T) {
	var rf *retiringForge
	h := newHarnessForge(t, 0, 2, guestRunsOneJob, nil, slog.New(slog.NewTextHandler(io.Discard, nil)),
		func(f *fakeForge) forge.Forge { rf = &retiringForge{fakeForge: f}; return rf })
	h.hv.jobTime = 500 * time.Millisecond
	h.forge.enqueue("j1")
	eventually(t, 20*time.Second, "the job's VM busy", func() bool { return h.m.Phases()[vmstate.Busy] == 1 })
	eventually(t, 20*time.Second, "the runner retired", func() bool { return len(rf.retirements()) == 1 })
	r := rf.retirements()[0]
	if !r.runnerPresent || !r.jobRunning {
		t.Fatalf("retired %+v: want the runner still at the forge with its job running", r)
	}
	h.forge.mu.Lock()
	finished := len(h.forge.finished)
	h.forge.mu.Unlock()
	if finished != 0 {
		t.Fatal("the job ended before the retirement was checked; the test proves nothing")
	}
	eventually(t, 20*time.Second, "the VM gone", func() bool { return len(h.m.VMs()) == 0 })
	if n := len(rf.retirements()); n != 1 {
		t.Fatalf("%d retirements for one job, want 1", n)
	}
	h.assertNothingLeft(t)
}

// A busy VM adopted after a restart has its runner retired: the previous
// run may have ended between the job-started report and the retirement.
func TestAdoptedBusyVMsRunnerIsRetired(t *testing.T) {
	var rf *retiringForge
	h := newHarnessForge(t, 0, 1, guestRunsOneJob, nil, slog.New(slog.NewTextHandler(io.Discard, nil)),
		func(f *fakeForge) forge.Forge { rf = &retiringForge{fakeForge: f}; return rf })
	machine := leaveRunningVM(t, h, "")
	err := h.m.Recover(context.Background(), Leftovers{
		Adopt: func(string, int) (vmm.Machine, error) { return machine, nil },
		TAPs:  func() ([]string, error) { return []string{"faa1"}, nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Second, "the adopted VM's runner retired", func() bool { return len(rf.retirements()) == 1 })
	if r := rf.retirements()[0]; r.ref.ID != "5" || !r.runnerPresent || !r.jobRunning {
		t.Fatalf("retired %+v: want runner 5, still at the forge with its job running", r)
	}
	finishAdoptedJob(t, h, machine)
}
