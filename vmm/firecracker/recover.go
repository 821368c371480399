package firecracker

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/nixos-fireactions/nixos-fireactions/vmm"
	"github.com/nixos-fireactions/nixos-fireactions/vmm/process"
	"golang.org/x/sys/unix"
)

// identity tells a jailer or firecracker started with --id id (the
// jailer execs firecracker in the same process, passing the id on).
var identity = process.Identity(func(args []string, id string) bool {
	if !isVMM(args) {
		return false
	}
	for i, a := range args {
		if a == "--id="+id || (a == "--id" && i+1 < len(args) && args[i+1] == id) {
			return true
		}
	}
	return false
})

// isVMM reports whether a command line is a jailer's or firecracker's.
func isVMM(args []string) bool {
	name := filepath.Base(args[0])
	return strings.Contains(name, "firecracker") || strings.Contains(name, "jailer")
}

// IsOurs reports whether pid runs VM id's monitor: a jailer or firecracker
// started with --id id, so recovery never signals an unrelated process
// that reused the pid.
func IsOurs(pid int, id string) bool { return identity.IsOurs(pid, id) }

var _ vmm.Finder = (*Driver)(nil)

// FindMonitor implements vmm.Finder: the jailer or firecracker started
// with --id id (the jailer execs firecracker in the same process, so the
// pid is the VMM's either way), found in the process table; 0 if none.
func (d *Driver) FindMonitor(id string) (int, error) {
	pid, err := identity.Find(id)
	if err != nil {
		return 0, fmt.Errorf("firecracker: %w", err)
	}
	return pid, nil
}

// Adopt implements vmm.Adopter. When the adopted VM ends, its jail goes.
func (d *Driver) Adopt(id string, pid int) (vmm.Machine, error) {
	cleanup, err := d.cleanupFor(id)
	if err != nil {
		return nil, fmt.Errorf("firecracker: adopt vm %s: %w", id, err)
	}
	m, err := identity.Adopt(id, pid, func() {
		if err := cleanup(); err != nil {
			d.log().Error("remove the vm's jail", "vm", id, "err", err)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("firecracker: adopt vm %s: %w", id, err)
	}
	return m, nil
}

// Reap implements vmm.Reaper: kill VM id's monitor if pid still is it,
// then remove its jail and cgroup.
func (d *Driver) Reap(ctx context.Context, id string, pid int) error {
	if err := identity.KillStale(ctx, id, pid); err != nil {
		return fmt.Errorf("firecracker: %w", err)
	}
	cleanup, err := d.cleanupFor(id)
	if err != nil {
		return fmt.Errorf("firecracker: reap vm %s: %w", id, err)
	}
	return cleanup()
}

// RemoveStaleJails removes the jails (and cgroups) under the chroot base
// whose VM has no running monitor: left by a crash between making the
// jail and recording the VM, or kept aside for their ACL entries
// (keepAside). Jails of running monitors stay, to be
// adopted or reaped by recovery. The template's files a stale jail links
// to lose every ACL entry of a jail group no running jail has: a crash
// between the grant and the jail's chown leaves its gid unknown. It runs
// at start-up, before any VM starts (no grant is under way).
func (d *Driver) RemoveStaleJails() error {
	if d.Jailer == nil {
		return nil
	}
	execFile, base, err := d.Jailer.jails(d.Binary)
	if err != nil {
		return err
	}
	entries, err := os.ReadDir(base)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("firecracker: list jails: %w", err)
	}
	running := runningIDs()
	// The running jails' groups (their roots are theirs once the
	// jailer ran), under any firecracker's base: a running VM may be of
	// the binary before an upgrade.
	live := map[int]bool{}
	for id := range running {
		roots, _ := filepath.Glob(filepath.Join(filepath.Dir(base), "*", id, "root"))
		for _, r := range roots {
			var st unix.Stat_t
			if unix.Stat(r, &st) == nil && d.Jailer.inRange(int(st.Gid)) {
				live[int(st.Gid)] = true
			}
		}
	}
	var errs []error
	for _, e := range entries {
		if !e.IsDir() || running[e.Name()] || !vmIDPattern.MatchString(e.Name()) {
			continue
		}
		stale := &jail{j: d.Jailer, id: e.Name(), execFile: execFile, dir: filepath.Join(base, e.Name()), liveGIDs: live}
		d.log().Info("removing a jail no monitor runs in", "vm", e.Name())
		errs = append(errs, stale.remove())
	}
	return errors.Join(errs...)
}

// cleanupFor is what removes VM id's host state: its jail, if jailed.
func (d *Driver) cleanupFor(id string) (func() error, error) {
	if d.Jailer == nil {
		return func() error { return nil }, nil
	}
	jl, err := d.Jailer.jailOf(d.Binary, id)
	if err != nil {
		return nil, err
	}
	return jl.remove, nil
}

// runningIDs are the VM ids of running jailers and firecrackers.
func runningIDs() map[string]bool {
	out := map[string]bool{}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if !isVMM(args) {
			continue
		}
		for i, a := range args {
			if v, ok := strings.CutPrefix(a, "--id="); ok {
				out[v] = true
			} else if a == "--id" && i+1 < len(args) {
				out[args[i+1]] = true
			}
		}
	}
	return out
}

// cgroup2Mount is the first cgroup2 mount in the mount table (the jailer
// looks it up the same way), or "".
func cgroup2Mount(table string) string {
	if table == "" {
		table = "/proc/mounts"
	}
	f, err := os.Open(table)
	if err != nil {
		return ""
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) >= 3 && fields[2] == "cgroup2" {
			return fields[1]
		}
	}
	return ""
}
