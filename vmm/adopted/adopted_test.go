package adopted

import (
	"context"
	"os/exec"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/vmm"
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
	return cmd
}

func TestWatchRefusesAProcessThatIsNotTheMonitor(t *testing.T) {
	cmd := start(t, "sleep", "30")
	defer cmd.Process.Kill()
	if _, err := Watch(cmd.Process.Pid, func() bool { return false }, nil); err == nil {
		t.Fatal("a process that is not the monitor was adopted")
	}
}

func TestKillEndsTheProcessThenRunsOnExit(t *testing.T) {
	cmd := start(t, "sleep", "30")
	var exited atomic.Bool
	m, err := Watch(cmd.Process.Pid, func() bool { return true }, func() { exited.Store(true) })
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
	m, err := Watch(cmd.Process.Pid, func() bool { return true }, nil)
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
