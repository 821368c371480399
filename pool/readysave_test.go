package pool

import (
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
	"github.com/nixos-fireactions/nixos-fireactions/vmstate"
)

// A VM adopted while booting whose first report after the restart is its
// job's start becomes ready and busy at once. When the state disk is full
// then, the record is left unsaved (saved again once there is room), and
// the VM goes on with its job: it is not ended for a lagging record.
func TestFailedSaveAtReadyLeavesTheStartedJobRunning(t *testing.T) {
	root := mountTmpfs(t, "256k")
	h := newHarnessAt(t, filepath.Join(root, "vms"), 0, 1, guestRunsOneJob, nil,
		slog.New(slog.NewTextHandler(io.Discard, nil)), nil, nil)
	machine := leaveBootingVM(t, h, nil)
	recoverAndRun(t, h, machine)
	if r, err := h.m.VM("0000000000b1"); err != nil || r.Phase != vmstate.Booting {
		t.Fatalf("adopted vm = %+v, %v; want booting", r, err)
	}
	release := fillDisk(t, filepath.Join(root, "fill"), filepath.Join(root, "vms"), h.store)
	if err := h.m.Report("tok", agentproto.Report{VMID: "0000000000b1", Event: agentproto.EventJobStarted, Job: "j1"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Second, "the adopted VM busy", func() bool {
		r, err := h.m.VM("0000000000b1")
		return err == nil && r.Phase == vmstate.Busy
	})
	select {
	case <-machine.kill:
		t.Fatal("the VM running its job was ended for a record it could not save")
	case <-time.After(200 * time.Millisecond): // many reconcile periods
	}
	release()
	eventually(t, 2*time.Second, "the record saved again", func() bool {
		return diskRecords(t, h.store)["0000000000b1"].Phase == vmstate.Busy
	})
	if err := h.m.Report("tok", agentproto.Report{VMID: "0000000000b1", Event: agentproto.EventRunnerExited}); err != nil {
		t.Fatal(err)
	}
	close(machine.done)
	eventually(t, 2*time.Second, "the VM gone after its job", func() bool { return len(h.m.VMs()) == 0 })
	h.assertNothingLeft(t)
}
