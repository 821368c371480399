// Package process is what the VMM drivers share about their monitor
// processes (QEMU, Firecracker, the jailer): starting one in a process
// group of its own and following it (Start), taking over one a previous
// run of the orchestrator left (Identity.Adopt, through a pidfd), telling
// a driver's monitor for a VM from every other process by its command
// line (Identity.IsOurs), finding it by the VM's id alone
// (Identity.Find), and killing one a previous run left
// (Identity.KillStale).
//
// It exists so that exit, kill, adoption and clean-up semantics are the
// same whatever the monitor: a kill ends the monitor's whole process
// group (whatever it started dies with it), whether this run started it
// (Started.Kill), adopted it (Adopted.Kill) or finds it stale
// (Identity.KillStale). A driver states only what tells its own
// monitor apart (an Identity) and what the VM holds on the host besides
// the process. Each driver reaps its own leftovers through it (see
// vmm.Reaper); nothing outside the drivers signals a monitor.
package process

import (
	"context"
	"fmt"
	"os/exec"
	"sync"
	"syscall"

	"github.com/nixos-fireactions/nixos-fireactions/vmm"
)

// Started is a monitor this program started, the leader of its own
// process group: it notices the exit, keeps the exit error, and stops the
// whole process group hard.
type Started struct {
	cmd       *exec.Cmd
	name      string
	afterExit func()
	exited    chan struct{} // the process is gone
	done      chan struct{} // and afterExit has run

	mu     sync.Mutex
	err    error
	killed bool
}

var _ vmm.Machine = (*Started)(nil)

// Start starts cmd as the leader of a process group of its own (a signal
// to the orchestrator's group does not reach the VMs, so a restart can
// adopt them) and follows it. name prefixes the exit error ("qemu exited:
// …"); afterExit, when set, runs once the process is gone and before Done
// closes (e.g. removing a jail). The error is cmd.Start's, as it is.
func Start(cmd *exec.Cmd, name string, afterExit func()) (*Started, error) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &Started{cmd: cmd, name: name, afterExit: afterExit, exited: make(chan struct{}), done: make(chan struct{})}
	go p.wait()
	return p, nil
}

func (p *Started) wait() {
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
func (p *Started) PID() int { return p.cmd.Process.Pid }

// Exited is closed as soon as the process is gone, before afterExit.
func (p *Started) Exited() <-chan struct{} { return p.exited }

// Done implements vmm.Machine.
func (p *Started) Done() <-chan struct{} { return p.done }

// Err implements vmm.Machine: nil when the guest ended itself.
func (p *Started) Err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// Kill implements vmm.Machine: SIGKILL to the process group, so nothing
// the monitor started outlives it, then wait for Done.
func (p *Started) Kill(ctx context.Context) error {
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
