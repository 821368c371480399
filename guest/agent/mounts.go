package agent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// mountPoint is one filesystem the agent mounts before anything else.
type mountPoint struct {
	source, target, fstype string
	flags                  uintptr
	data                   string
}

// mountPoints are the kernel filesystems and scratch space a runner expects,
// in order (devpts and shm live inside the devtmpfs).
var mountPoints = []mountPoint{
	{"proc", "/proc", "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
	{"sysfs", "/sys", "sysfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
	{"devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID, "mode=0755"},
	{"devpts", "/dev/pts", "devpts", unix.MS_NOSUID | unix.MS_NOEXEC, "gid=5,mode=0620,ptmxmode=0666"},
	{"tmpfs", "/dev/shm", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"},
	{"tmpfs", "/tmp", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"},
	{"tmpfs", "/run", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755"},
}

// mountAll mounts mountPoints, creating the mount points. A filesystem
// already mounted (EBUSY) is fine.
func (a *Agent) mountAll() error {
	for _, m := range mountPoints {
		target := filepath.Join(a.Root, m.target)
		if err := os.MkdirAll(target, 0o755); err != nil {
			return fmt.Errorf("creating mount point %s: %w", m.target, err)
		}
		err := a.Sys.Mount(m.source, target, m.fstype, m.flags, m.data)
		if err != nil && !errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("mounting %s on %s: %w", m.fstype, m.target, err)
		}
	}
	return nil
}

// loadModules loads the kernel modules in order. A module that fails is
// logged, not fatal: the step that needs its driver fails more clearly.
func (a *Agent) loadModules(paths []string) {
	if len(paths) == 0 {
		return
	}
	start := a.Sys.Uptime()
	failed := 0
	for _, p := range paths {
		if err := a.Sys.LoadModule(filepath.Join(a.Root, p)); err != nil {
			a.logf("loading module %s: %v", p, err)
			failed++
		}
	}
	a.logf("loaded %d of %d kernel modules in %.3fs", len(paths)-failed, len(paths), (a.Sys.Uptime() - start).Seconds())
}
