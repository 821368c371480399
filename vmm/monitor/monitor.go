// Package monitor is the vmm.Machine of a monitor process the orchestrator
// started itself (QEMU, Firecracker, the jailer): it notices the exit,
// keeps the exit error, and stops the whole process group hard. The
// drivers share it so exit and kill semantics are the same whatever the
// monitor.
package monitor

import (
	"context"
	"fmt"
	"os/exec"
	"sync"
	"syscall"

	"github.com/nixos-fireactions/nixos-fireactions/vmm"
)

// Process is a started monitor that leads its own process group.
type Process struct {
	cmd       *exec.Cmd
	name      string
	afterExit func()
	exited    chan struct{} // the process is gone
	done      chan struct{} // and afterExit has run

	mu     sync.Mutex
	err    error
	killed bool
}

var _ vmm.Machine = (*Process)(nil)

// Watch follows cmd, which must be started with Setpgid. name prefixes the
// exit error ("qemu exited: …"); afterExit, when set, runs once the
// process is gone and before Done closes (e.g. removing a jail).
func Watch(cmd *exec.Cmd, name string, afterExit func()) *Process {
	p := &Process{cmd: cmd, name: name, afterExit: afterExit, exited: make(chan struct{}), done: make(chan struct{})}
	go p.wait()
	return p
}

func (p *Process) wait() {
	err := p.cmd.Wait()
	close(p.exited)
	if p.afterExit != nil {
		p.afterExit()
	}
	p.mu.Lock()
	switch {
	case p.killed:
		err = vmm.ErrKilled
	case err != nil:
		err = fmt.Errorf("%s exited: %w", p.name, err)
	}
	p.err = err
	p.mu.Unlock()
	close(p.done)
}

// PID implements vmm.Machine.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Exited is closed as soon as the process is gone, before afterExit.
func (p *Process) Exited() <-chan struct{} { return p.exited }

// Done implements vmm.Machine.
func (p *Process) Done() <-chan struct{} { return p.done }

// Err implements vmm.Machine: nil when the guest ended itself.
func (p *Process) Err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// Kill implements vmm.Machine: SIGKILL to the process group, so nothing
// the monitor started outlives it, then wait for Done.
func (p *Process) Kill(ctx context.Context) error {
	p.mu.Lock()
	select {
	case <-p.done:
		p.mu.Unlock()
		return nil
	default:
	}
	p.killed = true
	p.mu.Unlock()
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-p.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%s: pid %d did not exit: %w", p.name, p.PID(), ctx.Err())
	}
}
