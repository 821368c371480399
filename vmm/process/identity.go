package process

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Identity tells, from a process's command line (args, never empty), whether
// the process is a driver's monitor for VM vmID: QEMU's -name, the
// jailer's and Firecracker's --id. It is what lets recovery find, adopt
// and kill a VM's monitor without ever signalling an unrelated process
// that reused its pid.
type Identity func(args []string, vmID string) bool

// IsOurs reports whether pid runs VM vmID's monitor.
func (is Identity) IsOurs(pid int, vmID string) bool {
	args := Args(pid)
	return len(args) > 0 && is(args, vmID)
}

// Args is pid's command line, nil when pid is gone or has none (a kernel
// thread, a zombie).
func Args(pid int) []string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return nil
	}
	s := strings.TrimRight(string(b), "\x00")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\x00")
}

// Find returns the pid of VM vmID's running monitor, found in the process
// table by its identity; 0 if none. A child the monitor forks has its
// command line until it execs: of several processes that claim the VM,
// the one whose parent does not is it.
func (is Identity) Find(vmID string) (int, error) {
	procs, err := filepath.Glob("/proc/[0-9]*")
	if err != nil {
		return 0, fmt.Errorf("find vm %s: %w", vmID, err)
	}
	claim := map[int]bool{}
	for _, p := range procs {
		pid, err := strconv.Atoi(strings.TrimPrefix(p, "/proc/"))
		if err == nil && pid != os.Getpid() && is.IsOurs(pid, vmID) {
			claim[pid] = true
		}
	}
	var roots []int
	for pid := range claim {
		if !claim[parentOf(pid)] {
			roots = append(roots, pid)
		}
	}
	switch len(roots) {
	case 0:
		return 0, nil
	case 1:
		return roots[0], nil
	}
	return 0, fmt.Errorf("find vm %s: processes %v all claim it", vmID, roots)
}

// parentOf is pid's parent pid, 0 if unknown.
func parentOf(pid int) int {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// pid (comm) state ppid ...; comm may hold spaces and parentheses.
	rest := string(b)
	if i := strings.LastIndexByte(rest, ')'); i >= 0 {
		rest = rest[i+1:]
	}
	f := strings.Fields(rest)
	if len(f) < 2 {
		return 0
	}
	ppid, _ := strconv.Atoi(f[1])
	return ppid
}

// KillStale ends VM vmID's monitor that a previous run left, if pid (0:
// none recorded) still is it, as Adopted.Kill ends an adopted one: SIGKILL
// to its process group when it leads it (whatever it started dies with
// it), and to it through a pidfd (never to a process that took its pid
// meanwhile). Then it waits until pid is no longer the monitor, or ctx
// ends: an error then, the monitor maybe still running (a caller keeps
// what it holds). A pid that is not the monitor, or none, is no error.
func (is Identity) KillStale(ctx context.Context, vmID string, pid int) error {
	if pid <= 0 || !is.IsOurs(pid, vmID) {
		return nil
	}
	ours := func() bool { return is.IsOurs(pid, vmID) }
	fd, err := unix.PidfdOpen(pid, 0)
	if errors.Is(err, syscall.ESRCH) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("open pidfd of %d: %w", pid, err)
	}
	defer unix.Close(fd)
	if !ours() {
		return nil // gone, or its pid reused, before the pidfd named it
	}
	killGroup(fd, pid, ours)
	if err := unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("kill pid %d: %w", pid, err)
	}
	for is.IsOurs(pid, vmID) {
		select {
		case <-ctx.Done():
			return fmt.Errorf("pid %d did not exit: %w", pid, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}
