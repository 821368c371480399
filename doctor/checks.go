package doctor

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/nixos-fireactions/nixos-fireactions/config"
	"github.com/nixos-fireactions/nixos-fireactions/kconfig"
	"github.com/nixos-fireactions/nixos-fireactions/vmm/kvmprobe"
)

// Host is what the checks ask of the machine.
type Host interface {
	// KVM runs a real test vCPU on /dev/kvm.
	KVM(ctx context.Context) kvmprobe.Result
	LookPath(name string) (string, error)
	// Version is the first line `binary --version` prints.
	Version(ctx context.Context, binary string) (string, error)
	// Head reads up to n bytes from the start of a file.
	Head(path string, n int) ([]byte, error)
	Size(path string) (int64, error)
	// Writable creates and removes a file in dir, or says why it cannot;
	// a missing dir is checked at its nearest existing parent.
	Writable(dir string) error
	// Free is the space available to unprivileged use on path's file
	// system (its nearest existing parent's).
	Free(path string) (uint64, error)
	// SameFS reports whether two paths (or their nearest existing
	// parents) are on one file system.
	SameFS(a, b string) (bool, error)
	// MemAvailable is the kernel's estimate of memory available without
	// swapping.
	MemAvailable() (uint64, error)
	// Links lists network links by name with their kind (bridge, tuntap…)
	// over netlink.
	Links() (map[string]string, error)
	Exists(path string) bool
	// Cgroup2 is the cgroup v2 mount and the controllers it offers.
	Cgroup2() (mount string, controllers []string, err error)
	// KernelConfig reads what the kernel image at path was built with
	// (see package kconfig); modulesDir is its module tree, "" for the
	// default one of its version.
	KernelConfig(path, modulesDir string) (*kconfig.Kernel, error)
	// KernelModules names the modules of a pool's kernel_modules with
	// their dependencies, as its boot archive packs them.
	KernelModules(modulesDir string, names []string) ([]string, error)
}

// Per-VM estimates the disk and memory checks use.
const (
	qemuOverheadMiB = 128      // QEMU's own memory per VM (more under TCG)
	vmDiskSlack     = 32 << 20 // per-VM files besides the initramfs: agent, config, console log
)

// Run checks the host against cfg.
func Run(ctx context.Context, cfg *config.Config, h Host) Report {
	r := Report{Driver: cfg.VMM.Driver}
	for _, p := range cfg.Pools {
		r.Pools = append(r.Pools, p.Name)
	}
	checkKVM(ctx, &r, cfg, h)
	checkBinaries(ctx, &r, cfg, h)
	checkKernels(&r, cfg, h)
	checkDrivers(&r, cfg, h)
	checkNetwork(ctx, &r, cfg, h)
	if cfg.VMM.Driver == "firecracker" && cfg.VMM.Firecracker.JailerOn() {
		checkCgroups(&r, h)
	}
	checkStateDir(&r, cfg, h)
	checkCapacity(&r, cfg, h)
	return r
}

func checkKVM(ctx context.Context, r *Report, cfg *config.Config, h Host) {
	res := h.KVM(ctx)
	if res.Usable {
		r.add(Finding{Check: "kvm", Status: OK, Detail: "/dev/kvm runs stock guests (a test vCPU took its feature MSRs and ran guest code)"})
		return
	}
	detail := "/dev/kvm is unusable for stock guests: " + res.Reason
	switch {
	case cfg.VMM.Driver == "firecracker":
		r.add(Finding{Check: "kvm", Status: Fail, Detail: detail,
			Fix: "Firecracker runs only on KVM: use a host with hardware virtualization (vmx/svm, kvm_intel or kvm_amd loaded), or set vmm.driver: qemu, which falls back to TCG software emulation"})
	case cfg.VMM.QEMU.Accel == "kvm":
		r.add(Finding{Check: "kvm", Status: Fail, Detail: detail,
			Fix: "set vmm.qemu.accel: auto (or tcg) to run guests under TCG software emulation, or fix KVM"})
	case cfg.VMM.QEMU.Accel == "tcg":
		r.add(Finding{Check: "kvm", Status: OK, Detail: detail + "; vmm.qemu.accel is tcg anyway"})
	case res.RefusedMSR:
		r.add(Finding{Check: "kvm", Status: Warn, Detail: detail,
			Fix: "QEMU decides at start: the orchestrator tries a vCPU on KVM with it and uses TCG (software emulation, several times slower) if QEMU cannot set one up; its log line \"qemu acceleration detected\" says which"})
	default:
		r.add(Finding{Check: "kvm", Status: Warn, Detail: detail,
			Fix: "the fallback applies: QEMU runs guests under TCG (software emulation), which works but boots and runs jobs several times slower; for KVM use a host with hardware virtualization"})
	}
}

func checkBinaries(ctx context.Context, r *Report, cfg *config.Config, h Host) {
	type bin struct{ check, name, key string }
	var bins []bin
	switch cfg.VMM.Driver {
	case "firecracker":
		fc := cfg.VMM.Firecracker
		bins = append(bins, bin{"firecracker", fc.Binary, "vmm.firecracker.binary"})
		if fc.JailerOn() {
			bins = append(bins, bin{"jailer", fc.JailerBinary, "vmm.firecracker.jailer_binary"})
		}
	default:
		bins = append(bins, bin{"qemu", cfg.VMM.QEMU.Binary, "vmm.qemu.binary"})
	}
	versions := map[string]string{}
	for _, b := range bins {
		path, err := h.LookPath(b.name)
		if err != nil {
			r.add(Finding{Check: b.check, Status: Fail, Detail: fmt.Sprintf("%s not found: %v", b.name, err),
				Fix: fmt.Sprintf("install it, or set %s to its absolute path", b.key)})
			continue
		}
		v, err := h.Version(ctx, path)
		if err != nil {
			r.add(Finding{Check: b.check, Status: Fail, Detail: fmt.Sprintf("%s --version failed: %v", path, err),
				Fix: fmt.Sprintf("check %s is a working %s binary for this machine", path, b.check)})
			continue
		}
		versions[b.check] = versionNumber(v)
		r.add(Finding{Check: b.check, Status: OK, Detail: fmt.Sprintf("%s: %s", path, v)})
	}
	fc, j := versions["firecracker"], versions["jailer"]
	if fc != "" && j != "" && fc != j {
		r.add(Finding{Check: "jailer", Status: Warn, Detail: fmt.Sprintf("jailer %s and firecracker %s differ", j, fc),
			Fix: "use the jailer of the same Firecracker release"})
	}
}

// versionNumber is the vX.Y.Z word of a version line.
func versionNumber(line string) string {
	for _, w := range strings.Fields(line) {
		if strings.HasPrefix(w, "v") && strings.Count(w, ".") >= 1 {
			return w
		}
	}
	return line
}

// Kernel formats the checks tell apart.
const (
	formatELF     = "an ELF vmlinux"
	formatBzImage = "a bzImage"
)

// kernelFormat reads the image's magic: ELF, or the x86 boot protocol's
// "HdrS" at 0x202 of a bzImage.
func kernelFormat(head []byte) string {
	switch {
	case bytes.HasPrefix(head, []byte("\x7fELF")):
		return formatELF
	case len(head) >= 0x206 && string(head[0x202:0x206]) == "HdrS":
		return formatBzImage
	}
	return "neither an ELF vmlinux nor a bzImage"
}

func checkKernels(r *Report, cfg *config.Config, h Host) {
	for _, p := range cfg.Pools {
		head, err := h.Head(p.VM.Kernel, 0x210)
		if err != nil {
			r.add(Finding{Check: "kernel", Status: Fail, Pools: []string{p.Name}, Detail: fmt.Sprintf("pool %s: %v", p.Name, err),
				Fix: "set vm.kernel to a readable kernel image"})
			continue
		}
		format := kernelFormat(head)
		detail := fmt.Sprintf("pool %s: %s is %s", p.Name, p.VM.Kernel, format)
		switch {
		case cfg.VMM.Driver == "firecracker" && format != formatELF:
			r.add(Finding{Check: "kernel", Status: Fail, Pools: []string{p.Name}, Detail: detail,
				Fix: "Firecracker boots an uncompressed ELF vmlinux: build one (the vmlinux of a kernel build) or extract it from the bzImage with the kernel's scripts/extract-vmlinux"})
		case cfg.VMM.Driver != "firecracker" && format == formatELF:
			r.add(Finding{Check: "kernel", Status: Warn, Detail: detail,
				Fix: "QEMU boots an ELF vmlinux only if it has a PVH entry point (CONFIG_PVH); a bzImage (vmlinuz) always boots"})
		case cfg.VMM.Driver != "firecracker" && format != formatBzImage:
			r.add(Finding{Check: "kernel", Status: Fail, Pools: []string{p.Name}, Detail: detail,
				Fix: "QEMU boots a bzImage (vmlinuz): point vm.kernel at one"})
		default:
			r.add(Finding{Check: "kernel", Status: OK, Detail: detail + ", as " + cfg.VMM.Driver + " boots"})
		}
	}
}

func checkNetwork(ctx context.Context, r *Report, cfg *config.Config, h Host) {
	if path, err := h.LookPath("nft"); err != nil {
		r.add(Finding{Check: "nftables", Status: Fail, Detail: "nft not found: " + err.Error(),
			Fix: "install nftables: the VMs' NAT and isolation rules are nft tables"})
	} else if v, err := h.Version(ctx, path); err != nil {
		r.add(Finding{Check: "nftables", Status: Fail, Detail: fmt.Sprintf("%s --version failed: %v", path, err), Fix: "reinstall nftables"})
	} else {
		r.add(Finding{Check: "nftables", Status: OK, Detail: fmt.Sprintf("%s: %s", path, v)})
	}
	links, err := h.Links()
	switch kind, exists := links[cfg.Network.Bridge]; {
	case err != nil:
		r.add(Finding{Check: "bridge", Status: Fail, Detail: "netlink: " + err.Error(),
			Fix: "run fireactions as root (or with CAP_NET_ADMIN): it creates the bridge and a TAP per VM over netlink"})
	case exists && kind != "bridge":
		r.add(Finding{Check: "bridge", Status: Fail, Detail: fmt.Sprintf("%s exists but is a %s, not a bridge", cfg.Network.Bridge, kind),
			Fix: "remove that link or set network.bridge to another name"})
	case exists:
		r.add(Finding{Check: "bridge", Status: OK, Detail: fmt.Sprintf("netlink works; bridge %s exists", cfg.Network.Bridge)})
	default:
		r.add(Finding{Check: "bridge", Status: OK, Detail: fmt.Sprintf("netlink works; bridge %s will be created", cfg.Network.Bridge)})
	}
	if !h.Exists("/dev/net/tun") {
		r.add(Finding{Check: "tun", Status: Fail, Detail: "/dev/net/tun is missing",
			Fix: "load the tun module (modprobe tun): every VM's network is a TAP"})
	}
}

func checkCgroups(r *Report, h Host) {
	mount, ctrls, err := h.Cgroup2()
	if err != nil || mount == "" {
		r.add(Finding{Check: "cgroup", Status: Fail, Detail: fmt.Sprintf("no cgroup v2 hierarchy (%v)", err),
			Fix: "mount cgroup2 (boot with systemd.unified_cgroup_hierarchy=1): the jailer puts each VM in a cgroup v2 with cpu.max and memory.max"})
		return
	}
	var missing []string
	for _, c := range []string{"cpu", "memory"} {
		if !contains(ctrls, c) {
			missing = append(missing, c)
		}
	}
	if len(missing) > 0 {
		r.add(Finding{Check: "cgroup", Status: Fail,
			Detail: fmt.Sprintf("cgroup v2 at %s offers %s, not the %s controller the jailer's limits need", mount, listOrNone(ctrls), strings.Join(missing, " and ")),
			Fix:    "give cgroup v2 the controllers (a pure cgroup v2 host: systemd.unified_cgroup_hierarchy=1; no controller left on cgroup v1)"})
		return
	}
	r.add(Finding{Check: "cgroup", Status: OK, Detail: fmt.Sprintf("cgroup v2 at %s offers cpu and memory", mount)})
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

func checkStateDir(r *Report, cfg *config.Config, h Host) {
	if err := h.Writable(cfg.StateDir); err != nil {
		r.add(Finding{Check: "state_dir", Status: Fail, Detail: fmt.Sprintf("%s is not writable: %v", cfg.StateDir, err),
			Fix: "run fireactions as the owner of state_dir, or set state_dir to a writable directory"})
	} else {
		r.add(Finding{Check: "state_dir", Status: OK, Detail: cfg.StateDir + " is writable"})
	}
	fc := cfg.VMM.Firecracker
	if cfg.VMM.Driver != "firecracker" || !fc.JailerOn() {
		return
	}
	base := fc.ChrootBase(cfg.StateDir)
	if same, err := h.SameFS(cfg.StateDir, base); err == nil && !same {
		r.add(Finding{Check: "state_dir", Status: Warn, Detail: fmt.Sprintf("chroot base %s is on another file system than %s", base, cfg.StateDir),
			Fix: "boot files are copied into each jail instead of hard-linked: put chroot_base_dir on state_dir's file system"})
	}
}

func checkCapacity(r *Report, cfg *config.Config, h Host) {
	if len(cfg.Pools) == 0 {
		return
	}
	var disk, mem uint64
	for _, p := range cfg.Pools {
		root, _ := h.Size(p.VM.RootInitramfs)
		perVM := uint64(max(root, 0)) + vmDiskSlack
		disk += uint64(p.Max)*perVM + uint64(max(root, 0)) // each pool's boot archive, once
		overhead := qemuOverheadMiB
		if cfg.VMM.Driver == "firecracker" {
			overhead = cfg.VMM.Firecracker.MemoryOverheadMiB
		}
		mem += uint64(p.Max) * uint64(p.VM.MemoryMiB+overhead) << 20
	}
	what := "every pool at its max"
	if free, err := h.Free(cfg.StateDir); err != nil {
		r.add(Finding{Check: "disk", Status: Warn, Detail: "free space unknown: " + err.Error()})
	} else if free < disk {
		r.add(Finding{Check: "disk", Status: Fail, Detail: fmt.Sprintf("%s free under %s; %s needs about %s", mib(free), cfg.StateDir, what, mib(disk)),
			Fix: "free disk space, or lower the pools' max"})
	} else {
		r.add(Finding{Check: "disk", Status: OK, Detail: fmt.Sprintf("%s free under %s; %s needs about %s", mib(free), filepath.Clean(cfg.StateDir), what, mib(disk))})
	}
	if avail, err := h.MemAvailable(); err != nil {
		r.add(Finding{Check: "memory", Status: Warn, Detail: "available memory unknown: " + err.Error()})
	} else if avail < mem {
		r.add(Finding{Check: "memory", Status: Fail, Detail: fmt.Sprintf("%s available; %s needs %s (memory_mib plus VMM overhead, per VM)", mib(avail), what, mib(mem)),
			Fix: "lower the pools' max or memory_mib, or add memory"})
	} else {
		r.add(Finding{Check: "memory", Status: OK, Detail: fmt.Sprintf("%s available; %s needs %s", mib(avail), what, mib(mem))})
	}
}
