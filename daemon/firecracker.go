package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strconv"

	"github.com/nixos-fireactions/nixos-fireactions/config"
	"github.com/nixos-fireactions/nixos-fireactions/vmm"
	"github.com/nixos-fireactions/nixos-fireactions/vmm/firecracker"
)

// firecrackerDriver builds the Firecracker driver, jailed unless the
// configuration says otherwise, and removes jails a crash left with no
// VM running in them.
func firecrackerDriver(_ context.Context, cfg *config.Config, log *slog.Logger) (vmm.Hypervisor, error) {
	fc := cfg.VMM.Firecracker
	d := &firecracker.Driver{Binary: fc.Binary, MMDS: fc.MMDS, CallTimeout: fc.APICallTimeout, Log: log}
	if !fc.JailerOn() {
		log.Warn("firecracker runs without the jailer: no chroot, uid/gid or cgroup per VM", "mmds", fc.MMDS)
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
	if p, err := netip.ParsePrefix(cfg.Network.CIDR); err == nil {
		d.Jailer.Slots = 1 << (32 - p.Bits())
	}
	if err := d.RemoveStaleJails(); err != nil {
		log.Error("remove jails left by a previous run", "err", err)
	}
	log.Info("firecracker driver", "jailer", fc.JailerBinary, "chroot_base_dir", base,
		"uids", idRange(fc.UID, cfg.Network.CIDR), "gids", idRange(fc.GID, cfg.Network.CIDR), "mmds", fc.MMDS, "api_call_timeout", fc.APICallTimeout)
	return d, nil
}

// idRange is the jailed VMs' uids or gids from first, one per address of
// the VMs' network (the VM at offset n runs as first+n), for the log.
func idRange(first int, cidr string) string {
	p, err := netip.ParsePrefix(cidr)
	if err != nil {
		return strconv.Itoa(first) + "+"
	}
	return fmt.Sprintf("%d-%d", first, first+1<<(32-p.Bits())-1)
}
