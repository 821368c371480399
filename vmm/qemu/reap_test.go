package qemu

import (
	"context"
	"os/exec"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/vmm"
)

// TestReapKillsOnlyTheVMsQEMU: the daemon reaps a QEMU a previous run
// left through the driver (vmm.Reaper). A shell whose arguments carry
// QEMU's -name stands in for the monitor: the identity is the command
// line, not the binary.
func TestReapKillsOnlyTheVMsQEMU(t *testing.T) {
	stand := func(id string) *exec.Cmd {
		cmd := exec.Command("sh", "-c", "read x; true", "-name", ProcessName(id))
		in, err := cmd.StdinPipe() // held open: read x waits
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go cmd.Wait() // reaped as init would an orphan
		t.Cleanup(func() { in.Close(); cmd.Process.Kill() })
		return cmd
	}
	left, other := stand("reapee"), stand("bystander")
	var r vmm.Reaper = &Driver{}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := r.Reap(ctx, "reapee", other.Process.Pid); err != nil {
		t.Fatal(err)
	}
	if !IsOurs(other.Process.Pid, "bystander") {
		t.Fatal("Reap killed another VM's QEMU")
	}
	if err := r.Reap(ctx, "reapee", left.Process.Pid); err != nil {
		t.Fatal(err)
	}
	if IsOurs(left.Process.Pid, "reapee") {
		t.Fatal("the VM's QEMU still runs after Reap")
	}
}
