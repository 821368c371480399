package qemu

import (
	"context"
	"fmt"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/vmm"
	"github.com/nixos-fireactions/nixos-fireactions/vmm/process"
)

var (
	_ vmm.Adopter = (*Driver)(nil)
	_ vmm.Finder  = (*Driver)(nil)
	_ vmm.Reaper  = (*Driver)(nil)
)

// identity tells a QEMU this driver started for a VM by its -name.
var identity = process.Identity(func(args []string, vmID string) bool {
	for i := 0; i+1 < len(args); i++ {
		if args[i] == "-name" && args[i+1] == ProcessName(vmID) {
			return true
		}
	}
	return false
})

// IsOurs reports whether pid is a QEMU this driver started for vmID, by its
// command line, so recovery never signals an unrelated process that reused
// the pid.
func IsOurs(pid int, vmID string) bool { return identity.IsOurs(pid, vmID) }

// Adopt implements vmm.Adopter: the monitor is not our child, so its exit
// is watched through a pidfd, which also makes signals race-free.
func (d *Driver) Adopt(id string, pid int) (vmm.Machine, error) {
	m, err := identity.Adopt(id, pid, nil)
	if err != nil {
		return nil, fmt.Errorf("qemu: adopt vm %s: %w", id, err)
	}
	return m, nil
}

// FindMonitor implements vmm.Finder: the QEMU whose command line names VM
// id (-name fireactions-<id>), found in the process table; 0 if none.
func (d *Driver) FindMonitor(id string) (int, error) {
	pid, err := identity.Find(id)
	if err != nil {
		return 0, fmt.Errorf("qemu: %w", err)
	}
	return pid, nil
}

// reapWait is how long Reap waits for a killed QEMU to go. One that
// outlives SIGKILL longer (stuck in the kernel, frozen) is an error, as
// Firecracker's Reap has it: recovery keeps its record and TAP (and so
// its address) for the next start rather than freeing what a live QEMU
// may still use, and start-up goes on.
const reapWait = 2 * time.Second

// Reap implements vmm.Reaper: kill VM id's QEMU if pid still is it. A
// QEMU leaves nothing else on the host that the pool does not remove.
func (d *Driver) Reap(ctx context.Context, id string, pid int) error {
	wctx, cancel := context.WithTimeout(ctx, reapWait)
	defer cancel()
	if err := identity.KillStale(wctx, id, pid); err != nil {
		return fmt.Errorf("qemu: reap vm %s: %w", id, err)
	}
	return nil
}
