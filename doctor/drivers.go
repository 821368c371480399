package doctor

import (
	"fmt"
	"strings"

	"github.com/nixos-fireactions/nixos-fireactions/config"
	"github.com/nixos-fireactions/nixos-fireactions/initramfs"
	"github.com/nixos-fireactions/nixos-fireactions/kconfig"
)

// need is a driver a pool's guest kernel must have, and what for.
type need struct {
	kconfig.Driver
	why string
}

// guestNeeds are the drivers a pool's guests use: the virtio-mmio
// transport every device of a QEMU microvm or a Firecracker VM sits on,
// the network; for an image pool, the disks and the file systems the
// agent mounts (the image, the writable ext4, the overlay over both).
func guestNeeds(cfg *config.Config, p config.Pool) []need {
	vmm := "QEMU microvm"
	if cfg.VMM.Driver == "firecracker" {
		vmm = "Firecracker"
	}
	needs := []need{
		{kconfig.Driver{Symbol: "CONFIG_VIRTIO_MMIO", Module: "virtio_mmio"}, "the virtio-mmio transport every " + vmm + " device sits on"},
		{kconfig.Driver{Symbol: "CONFIG_VIRTIO_NET", Module: "virtio_net"}, "the guest's network device, eth0"},
	}
	if p.VM.Image == "" {
		return needs
	}
	needs = append(needs,
		need{kconfig.Driver{Symbol: "CONFIG_VIRTIO_BLK", Module: "virtio_blk"}, "the image and writable disks"},
		need{kconfig.Driver{Symbol: "CONFIG_EXT4_FS", Module: "ext4"}, "the writable disk"},
		need{kconfig.Driver{Symbol: "CONFIG_OVERLAY_FS", Module: "overlay"}, "the root overlay"},
	)
	if cfg.Images.FSType == "erofs" {
		needs = append(needs, need{kconfig.Driver{Symbol: "CONFIG_EROFS_FS", Module: "erofs"}, "the image (images.fs_type erofs)"})
	}
	return needs
}

// checkDrivers proves, without booting, that each pool's kernel can bring
// up its guests' devices and file systems: every needed driver is built
// in, or a module the pool's kernel_modules load (with dependencies).
func checkDrivers(r *Report, cfg *config.Config, h Host) {
	for _, p := range cfg.Pools {
		k, err := h.KernelConfig(p.VM.Kernel, p.VM.ModulesDir)
		if err != nil {
			continue // the kernel check has failed the pool already
		}
		loaded := map[string]bool{}
		if names := initramfs.ModulesFor(p.VM.KernelModules, p.Cache.Docker); len(names) > 0 {
			mods, err := h.KernelModules(p.VM.ModulesDir, names)
			if err != nil {
				r.add(Finding{Check: "drivers", Status: Fail, Pools: []string{p.Name},
					Detail: fmt.Sprintf("pool %s: vm.kernel_modules: %v", p.Name, err),
					Fix:    "list modules of this kernel's module tree (vm.modules_dir), uncompressed"})
				continue
			}
			for _, m := range mods {
				loaded[m] = true
			}
		}
		var builtIn, asModules, unknown []string
		failed := false
		for _, n := range guestNeeds(cfg, p) {
			switch st := k.Has(n.Driver); {
			case st == kconfig.BuiltIn:
				builtIn = append(builtIn, n.Module)
			case loaded[n.Module]:
				asModules = append(asModules, n.Module)
			case st == kconfig.Unknown:
				unknown = append(unknown, n.Module)
			case st == kconfig.Module:
				failed = true
				r.add(Finding{Check: "drivers", Status: Fail, Pools: []string{p.Name},
					Detail: fmt.Sprintf("pool %s: kernel %s has %s (%s) only as a module, and vm.kernel_modules does not load it (per %s)", p.Name, p.VM.Kernel, n.Module, n.why, k.Source),
					Fix:    fmt.Sprintf("add %s to pool %s's vm.kernel_modules (its dependencies come along), or use a kernel with %s=y; without it every VM of the pool fails", n.Module, p.Name, n.Symbol)})
			default:
				failed = true
				r.add(Finding{Check: "drivers", Status: Fail, Pools: []string{p.Name},
					Detail: fmt.Sprintf("pool %s: kernel %s lacks %s (%s): %s is not set (per %s)", p.Name, p.VM.Kernel, n.Module, n.why, n.Symbol, k.Source),
					Fix:    fmt.Sprintf("use a kernel built with %s=y (or =m, and %s in vm.kernel_modules)", n.Symbol, n.Module)})
			}
		}
		switch {
		case failed:
		case len(unknown) > 0:
			r.add(Finding{Check: "drivers", Status: Warn,
				Detail: fmt.Sprintf("pool %s: cannot tell whether kernel %s has %s: %s", p.Name, p.VM.Kernel, strings.Join(unknown, ", "), k.Source),
				Fix:    "build the kernel with CONFIG_IKCONFIG=y, or put its configuration beside it as config-<version>; without these drivers built in or in vm.kernel_modules every VM fails (\"interface eth0 did not appear\")"})
		default:
			r.add(Finding{Check: "drivers", Status: OK,
				Detail: fmt.Sprintf("pool %s: kernel has %s (per %s)", p.Name, driverList(builtIn, asModules), k.Source)})
		}
	}
}

// driverList is "virtio_mmio, virtio_net built in; overlay from kernel_modules".
func driverList(builtIn, modules []string) string {
	var parts []string
	if len(builtIn) > 0 {
		parts = append(parts, strings.Join(builtIn, ", ")+" built in")
	}
	if len(modules) > 0 {
		parts = append(parts, strings.Join(modules, ", ")+" from kernel_modules")
	}
	return strings.Join(parts, "; ")
}
