package qemu

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
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
		execed(t, cmd.Process.Pid, id)
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

// A QEMU that outlives its SIGKILL is an error, not a success: recovery
// then keeps the VM's record and TAP (pool.Recover) instead of freeing
// what a live QEMU still holds, as Firecracker's Reap has it. The
// stand-in outlives SIGKILL honestly: frozen by the cgroup v1 freezer, a
// task takes no signal until thawed (the v2 freezer lets SIGKILL
// through, so the test needs v1's).
func TestReapOfAQEMUThatSurvivesTheKillFails(t *testing.T) {
	const freezer = "/sys/fs/cgroup/freezer"
	if _, err := os.Stat(filepath.Join(freezer, "freezer.state")); err != nil {
		if _, err := os.Stat(filepath.Join(freezer, "tasks")); err != nil {
			t.Skipf("no cgroup v1 freezer at %s: %v", freezer, err)
		}
	}
	cg := filepath.Join(freezer, fmt.Sprintf("qemu-reap-test-%d", os.Getpid()))
	if err := os.Mkdir(cg, 0o755); err != nil {
		t.Skipf("cannot make a freezer cgroup (not root?): %v", err)
	}
	state := func(s string) {
		if err := os.WriteFile(filepath.Join(cg, "freezer.state"), []byte(s), 0o644); err != nil {
			t.Fatalf("freezer %s: %v", s, err)
		}
	}
	cmd := exec.Command("sh", "-c", "read x; true", "-name", ProcessName("frozen"))
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waited := make(chan struct{})
	go func() { cmd.Wait(); close(waited) }()
	t.Cleanup(func() {
		os.WriteFile(filepath.Join(cg, "freezer.state"), []byte("THAWED"), 0o644)
		in.Close()
		cmd.Process.Kill()
		<-waited
		os.Remove(cg)
	})
	pid := cmd.Process.Pid
	execed(t, pid, "frozen")
	if err := os.WriteFile(filepath.Join(cg, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644); err != nil {
		t.Fatal(err)
	}
	state("FROZEN")
	for end := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		b, _ := os.ReadFile(filepath.Join(cg, "freezer.state"))
		if strings.TrimSpace(string(b)) == "FROZEN" {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("the stand-in did not freeze: %q", b)
		}
	}

	var r vmm.Reaper = &Driver{}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = r.Reap(ctx, "frozen", pid)
	if !IsOurs(pid, "frozen") {
		t.Fatal("control: the frozen stand-in did not outlive its SIGKILL")
	}
	if err == nil {
		t.Fatal("Reap of a QEMU still running after the kill succeeded: recovery would free its TAP and address")
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Reap's error %v, want the wait's deadline wrapped", err)
	}

	// Thawed, it takes its SIGKILL and goes.
	state("THAWED")
	select {
	case <-waited:
	case <-time.After(5 * time.Second):
		t.Fatal("the stand-in outlived its thaw")
	}
}

// execed waits until pid shows VM id's QEMU command line: Start returns
// once the kernel has let go of the parent in execve, which may be before
// the new program's arguments are in place (under load the tests read
// none, and the stand-in looks like no VM's).
func execed(t *testing.T, pid int, id string) {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); !IsOurs(pid, id); time.Sleep(time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("pid %d never showed vm %s's command line", pid, id)
		}
	}
}
