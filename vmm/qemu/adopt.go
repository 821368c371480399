package qemu

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

var _ vmm.Adopter = (*Driver)(nil)

// Adopt implements vmm.Adopter: the monitor is not our child, so its exit
// is watched through a pidfd, which also makes signals race-free.
func (d *Driver) Adopt(id string, pid int) (vmm.Machine, error) {
	if !IsOurs(pid, id) {
		return nil, fmt.Errorf("qemu: pid %d is not vm %s's monitor", pid, id)
	}
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, fmt.Errorf("qemu: adopt pid %d: %w", pid, err)
	}
	// The pid may have been reused between the check and the open.
	if !IsOurs(pid, id) {
		unix.Close(fd)
		return nil, fmt.Errorf("qemu: pid %d is not vm %s's monitor", pid, id)
	}
	m := &adopted{pid: pid, fd: fd, done: make(chan struct{})}
	go m.wait()
	return m, nil
}

type adopted struct {
	pid    int
	fd     int
	done   chan struct{}
	mu     sync.Mutex
	killed bool
}

func (m *adopted) wait() {
	defer close(m.done)
	defer func() {
		m.mu.Lock()
		unix.Close(m.fd)
		m.fd = -1
		m.mu.Unlock()
	}()
	for {
		m.mu.Lock()
		fd := m.fd
		m.mu.Unlock()
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
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

func (m *adopted) PID() int              { return m.pid }
func (m *adopted) Done() <-chan struct{} { return m.done }

// Err is nil after a guest power-off; the exit status of a process that
// is not our child is not ours to read, so runner reports decide success.
func (m *adopted) Err() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.killed {
		return vmm.ErrKilled
	}
	return nil
}

func (m *adopted) Kill(ctx context.Context) error {
	select {
	case <-m.done:
		return nil
	default:
	}
	m.mu.Lock()
	m.killed = true
	if m.fd >= 0 {
		_ = unix.PidfdSendSignal(m.fd, unix.SIGKILL, nil, 0)
	}
	m.mu.Unlock()
	select {
	case <-m.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("qemu: adopted pid %d did not exit: %w", m.pid, ctx.Err())
	}
}
