package process

import (
	"context"
	"os/exec"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/vmm"
)

// anyone and never are identities that claim every process and none.
var (
	anyone = Identity(func([]string, string) bool { return true })
	never  = Identity(func([]string, string) bool { return false })
)

func start(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(args[0], args[1:]...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Reap it as soon as it exits, like the init process would for an
	// orphan; the watcher must not depend on who reaps.
	go cmd.Wait()
	execed(t, cmd.Process.Pid, func(a []string) bool { return a[0] == args[0] })
	return cmd
}

func TestAdoptRefusesAProcessThatIsNotTheMonitor(t *testing.T) {
	cmd := start(t, "sleep", "30")
	defer cmd.Process.Kill()
	if _, err := never.Adopt("vm", cmd.Process.Pid, nil); err == nil {
		t.Fatal("a process that is not the monitor was adopted")
	}
}

func TestKillEndsTheProcessThenRunsOnExit(t *testing.T) {
	cmd := start(t, "sleep", "30")
	var exited atomic.Bool
	m, err := anyone.Adopt("vm", cmd.Process.Pid, func() { exited.Store(true) })
	if err != nil {
		t.Fatal(err)
	}
	if m.PID() != cmd.Process.Pid {
		t.Fatalf("PID %d, want %d", m.PID(), cmd.Process.Pid)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := m.Kill(ctx); err != nil {
		t.Fatal(err)
	}
	<-m.Done()
	if !exited.Load() {
		t.Error("onExit had not run when Done closed")
	}
	if m.Err() != vmm.ErrKilled {
		t.Errorf("Err = %v, want ErrKilled", m.Err())
	}
}

func TestAnExitOfItsOwnIsNoError(t *testing.T) {
	cmd := start(t, "sleep", "0.3")
	m, err := anyone.Adopt("vm", cmd.Process.Pid, nil)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-m.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("exit not seen")
	}
	if m.Err() != nil {
		t.Errorf("Err = %v after the process ended by itself", m.Err())
	}
}
