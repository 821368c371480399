package process

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nixos-fireactions/nixos-fireactions/vmm"
)

// Adopted is a monitor process this program did not start: one a previous
// run of the orchestrator left running, taken over on restart (crash
// recovery). Such a process is not our child, so its exit is watched, and
// it is signalled, through a pidfd: the pidfd names the process itself,
// never a pid reused by another process.
type Adopted struct {
	pid    int
	ours   func() bool // pid still is the monitor, by its identity
	onExit func()
	done   chan struct{}

	mu     sync.Mutex
	fd     int
	killed bool
}

var _ vmm.Machine = (*Adopted)(nil)

// Adopt takes over pid, VM vmID's monitor. Whether pid still is that
// monitor is asked before and after the pidfd is opened, so a pid reused
// in between is refused. onExit (may be nil) runs once the process has
// exited, before Done is closed: a driver removes there what the VM held
// on the host.
func (is Identity) Adopt(vmID string, pid int, onExit func()) (*Adopted, error) {
	ours := func() bool { return is.IsOurs(pid, vmID) }
	if !ours() {
		return nil, fmt.Errorf("pid %d is not the expected monitor", pid)
	}
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, fmt.Errorf("open pidfd of %d: %w", pid, err)
	}
	if !ours() {
		unix.Close(fd)
		return nil, fmt.Errorf("pid %d is not the expected monitor", pid)
	}
	m := &Adopted{pid: pid, ours: ours, fd: fd, onExit: onExit, done: make(chan struct{})}
	go m.wait()
	return m, nil
}

func (m *Adopted) wait() {
	defer close(m.done)
	defer func() {
		if m.onExit != nil {
			m.onExit()
		}
	}()
	defer func() {
		m.mu.Lock()
		unix.Close(m.fd)
		m.fd = -1
		m.mu.Unlock()
	}()
	for {
		fds := []unix.PollFd{{Fd: int32(m.fd), Events: unix.POLLIN}}
		_, err := unix.Poll(fds, -1)
		if err == nil && fds[0].Revents != 0 {
			return
		}
		if err != nil && !errors.Is(err, syscall.EINTR) {
			// Fall back to polling the process table.
			for unix.Kill(m.pid, 0) == nil {
				time.Sleep(200 * time.Millisecond)
			}
			return
		}
	}
}

// PID implements vmm.Machine.
func (m *Adopted) PID() int { return m.pid }

// Done implements vmm.Machine.
func (m *Adopted) Done() <-chan struct{} { return m.done }

// Err implements vmm.Machine: nil after a guest power-off. The exit
// status of a process that is not our child is not ours to read, so
// runner reports decide success.
func (m *Adopted) Err() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.killed {
		return vmm.ErrKilled
	}
	return nil
}

// Kill implements vmm.Machine: SIGKILL to the monitor's process group,
// as Started.Kill sends it (whatever the monitor started dies with it),
// when the monitor leads its group (every monitor Start started does),
// and to the monitor through the pidfd; then wait.
func (m *Adopted) Kill(ctx context.Context) error {
	select {
	case <-m.done:
		return nil
	default:
	}
	m.mu.Lock()
	m.killed = true
	if m.fd >= 0 {
		killGroup(m.fd, m.pid, m.ours)
		_ = unix.PidfdSendSignal(m.fd, unix.SIGKILL, nil, 0)
	}
	m.mu.Unlock()
	select {
	case <-m.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("adopted monitor pid %d did not exit: %w", m.pid, ctx.Err())
	}
}

// killGroup sends SIGKILL to the process group pid leads, if pid (the
// process the pidfd fd names) still is the monitor (ours) and leads its
// group. The group id is pid's own, so it names no one else's group
// while pid lives: whether pid is alive is asked through the pidfd
// before and after its group is read (a pid cannot be reused while the
// process the pidfd names lives), and the signal goes while the monitor
// still lives, unsignalled. A monitor in a group it does not lead (its
// group is someone else's, the orchestrator's say) gets no group kill.
func killGroup(fd, pid int, ours func() bool) {
	alive := func() bool { return unix.PidfdSendSignal(fd, 0, nil, 0) == nil }
	if !alive() || !ours() {
		return
	}
	pgid, err := unix.Getpgid(pid)
	if err != nil || pgid != pid || !alive() {
		return
	}
	_ = unix.Kill(-pid, unix.SIGKILL)
}
