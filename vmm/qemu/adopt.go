package qemu

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/nixos-fireactions/nixos-fireactions/vmm"
	"github.com/nixos-fireactions/nixos-fireactions/vmm/adopted"
)

var (
	_ vmm.Adopter = (*Driver)(nil)
	_ vmm.Finder  = (*Driver)(nil)
)

// Adopt implements vmm.Adopter: the monitor is not our child, so its exit
// is watched through a pidfd, which also makes signals race-free.
func (d *Driver) Adopt(id string, pid int) (vmm.Machine, error) {
	m, err := adopted.Watch(pid, func() bool { return IsOurs(pid, id) }, nil)
	if err != nil {
		return nil, fmt.Errorf("qemu: adopt vm %s: %w", id, err)
	}
	return m, nil
}

// FindMonitor implements vmm.Finder: the QEMU whose command line names VM
// id (-name fireactions-<id>), found in the process table; 0 if none. A
// child the monitor forks has its command line until it execs: of several
// processes that claim the VM, the one whose parent does not is it.
func (d *Driver) FindMonitor(id string) (int, error) {
	procs, err := filepath.Glob("/proc/[0-9]*")
	if err != nil {
		return 0, fmt.Errorf("qemu: find vm %s: %w", id, err)
	}
	claim := map[int]bool{}
	for _, p := range procs {
		pid, err := strconv.Atoi(strings.TrimPrefix(p, "/proc/"))
		if err == nil && pid != os.Getpid() && IsOurs(pid, id) {
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
	return 0, fmt.Errorf("qemu: find vm %s: processes %v all claim it", id, roots)
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
