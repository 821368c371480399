package cli

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"github.com/nixos-fireactions/nixos-fireactions/config"
	"github.com/nixos-fireactions/nixos-fireactions/vmm"
	"github.com/nixos-fireactions/nixos-fireactions/vmm/firecracker"
)

// firecrackerDriver builds the Firecracker driver, jailed unless the
// configuration says otherwise, and removes jails a crash left with no
// VM running in them.
func firecrackerDriver(_ context.Context, cfg *config.Config, log *slog.Logger) (vmm.Hypervisor, error) {
	fc := cfg.VMM.Firecracker
	d := &firecracker.Driver{Binary: fc.Binary, Log: log}
	if !fc.JailerOn() {
		log.Warn("firecracker runs without the jailer: no chroot, uid/gid or cgroup per VM")
		return d, nil
	}
	base := fc.ChrootBase(cfg.StateDir)
	if err := os.MkdirAll(base, 0o711); err != nil {
		return nil, fmt.Errorf("vmm.firecracker.chroot_base_dir: %w", err)
	}
	d.Jailer = &firecracker.Jailer{
		Binary: fc.JailerBinary, ChrootBaseDir: base, UID: fc.UID, GID: fc.GID,
		ParentCgroup: fc.ParentCgroup, MemoryOverheadMiB: fc.MemoryOverheadMiB,
	}
	if err := d.RemoveStaleJails(); err != nil {
		log.Error("remove jails left by a previous run", "err", err)
	}
	log.Info("firecracker driver", "jailer", fc.JailerBinary, "chroot_base_dir", base, "uid", fc.UID, "gid", fc.GID)
	return d, nil
}
