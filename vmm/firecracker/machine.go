package firecracker

import (
	"context"
	"fmt"
	"log/slog"
	"os/exec"
	"sync"
	"syscall"

	"github.com/nixos-fireactions/nixos-fireactions/vmm"
)

// machine is a Firecracker this driver started.
type machine struct {
	cmd     *exec.Cmd
	cleanup func() error
	log     *slog.Logger
	exited  chan struct{} // the process is gone (before cleanup)
	done    chan struct{} // and what the VM held on the host too

	mu     sync.Mutex
	err    error
	killed bool
}

func newMachine(cmd *exec.Cmd, cleanup func() error, log *slog.Logger) *machine {
	m := &machine{cmd: cmd, cleanup: cleanup, log: log, exited: make(chan struct{}), done: make(chan struct{})}
	go m.wait()
	return m
}

func (m *machine) wait() {
	err := m.cmd.Wait()
	close(m.exited)
	if cerr := m.cleanup(); cerr != nil {
		m.log.Error("remove the vm's jail", "err", cerr)
	}
	m.mu.Lock()
	switch {
	case m.killed:
		err = vmm.ErrKilled
	case err != nil:
		err = fmt.Errorf("firecracker exited: %w", err)
	}
	m.err = err
	m.mu.Unlock()
	close(m.done)
}

func (m *machine) PID() int              { return m.cmd.Process.Pid }
func (m *machine) Done() <-chan struct{} { return m.done }

// Err is nil when the guest ended itself: Firecracker exits 0 when the
// guest resets (reboot=k).
func (m *machine) Err() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.err
}

// Kill is the hard stop: SIGKILL to the VMM's process group, then wait
// for it and for the jail's removal.
func (m *machine) Kill(ctx context.Context) error {
	m.mu.Lock()
	select {
	case <-m.done:
		m.mu.Unlock()
		return nil
	default:
	}
	m.killed = true
	m.mu.Unlock()
	_ = syscall.Kill(-m.cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-m.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("firecracker: pid %d did not exit: %w", m.PID(), ctx.Err())
	}
}
