package pool

import (
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/config"
	"github.com/nixos-fireactions/nixos-fireactions/forge"
	"github.com/nixos-fireactions/nixos-fireactions/internal/hosttest"
	"github.com/nixos-fireactions/nixos-fireactions/vmstate"
)

// On a forge whose runner list has no busy flag (GitLab), a VM whose
// job-started report is lost stays idle in the host's view while it runs
// its job. It is ended at ready + timeouts.job all the same, logged as
// recycled, not as a job timeout: nothing lives unbounded.
func TestJobWhoseStartReportIsLostEndsAtReadyPlusTheJobTimeout(t *testing.T) {
	var logs hosttest.SyncBuffer
	h := newHarnessLogging(t, 0, 1, guestRunsOneJob, func(p *config.Pool) { p.Timeouts.Job = 300 * time.Millisecond },
		slog.New(slog.NewTextHandler(&logs, nil)))
	h.forge.mu.Lock()
	h.forge.noBusyFlag = true
	h.forge.mu.Unlock()
	h.hv.jobTime = time.Hour
	h.forge.enqueue(silentJob + "j1")
	eventually(t, 2*time.Second, "the job taken", func() bool {
		h.forge.mu.Lock()
		defer h.forge.mu.Unlock()
		return len(h.forge.queue) == 0
	})
	eventually(t, 2*time.Second, "control: the VM running it idle in the host's view", func() bool {
		ph := h.m.Phases()
		return ph[vmstate.Busy] == 0 && ph[vmstate.Idle] == 1
	})
	eventually(t, 3*time.Second, "the VM running the unseen job ended", func() bool { return len(h.m.VMs()) == 0 })
	text := logs.String()
	if !strings.Contains(text, `level=WARN msg="recycled: no job seen within timeouts.job"`) {
		t.Errorf("the recycling is not logged:\n%s", text)
	}
	if strings.Contains(text, "job timeout 300ms reached") {
		t.Errorf("the recycling was taken for a job timeout:\n%s", grepLines(text, "job timeout"))
	}
	h.forge.mu.Lock()
	defer h.forge.mu.Unlock()
	if len(h.forge.finished) != 0 {
		t.Fatal("the endless job finished")
	}
}

// A VM that turns busy by the forge's word (its job-started report lost)
// has its runner retired all the same: every way to busy retires, once.
func TestRunnerRetiredWhenOnlyTheForgeSaysItsVMIsBusy(t *testing.T) {
	var rf *retiringForge
	h := newHarnessForge(t, 0, 1, guestRunsOneJob, nil, slog.New(slog.NewTextHandler(io.Discard, nil)),
		func(f *fakeForge) forge.Forge { rf = &retiringForge{fakeForge: f}; return rf })
	h.hv.jobTime = 500 * time.Millisecond
	h.forge.enqueue(silentJob + "j1")
	eventually(t, 2*time.Second, "the VM busy by the forge's word", func() bool { return h.m.Phases()[vmstate.Busy] == 1 })
	eventually(t, 2*time.Second, "the runner retired", func() bool { return len(rf.retirements()) == 1 })
	if r := rf.retirements()[0]; !r.runnerPresent || !r.jobRunning {
		t.Fatalf("retired %+v: want the runner still at the forge with its job running", r)
	}
	eventually(t, 3*time.Second, "the VM gone", func() bool { return len(h.m.VMs()) == 0 })
	if n := len(rf.retirements()); n != 1 {
		t.Fatalf("%d retirements for one job, want 1", n)
	}
	h.assertNothingLeft(t)
}
