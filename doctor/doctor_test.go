package doctor

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/nixos-fireactions/nixos-fireactions/config"
	"github.com/nixos-fireactions/nixos-fireactions/kconfig"
	"github.com/nixos-fireactions/nixos-fireactions/vmm/kvmprobe"
)

// fakeHost is a healthy KVM host unless a test breaks it.
type fakeHost struct {
	askedModules [][]string // the names of each KernelModules call
	kvm          kvmprobe.Result
	paths        map[string]string // name -> path; missing: not found
	versions     map[string]string // path -> first line; missing: --version fails
	heads        map[string][]byte
	sizes        map[string]int64
	writable     error
	free         uint64
	sameFS       bool
	mem          uint64
	links        map[string]string
	linksErr     error
	noTun        bool
	cgMount      string
	cgCtrls      []string
	cgroupErr    error
	kernels      map[string]*kconfig.Kernel // by image path; missing: unreadable
	modules      map[string][]string        // kernel_modules resolved, by first name
}

// allBuiltIn is a guest kernel configuration with every driver built in.
const allBuiltIn = "CONFIG_VIRTIO_MMIO=y\nCONFIG_VIRTIO_NET=y\nCONFIG_VIRTIO_BLK=y\nCONFIG_EXT4_FS=y\nCONFIG_OVERLAY_FS=y\nCONFIG_EROFS_FS=y\n"

var (
	elfKernel = append([]byte("\x7fELF"), make([]byte, 0x20c)...)
	bzImage   = func() []byte { b := make([]byte, 0x210); copy(b[0x202:], "HdrS"); return b }()
)

func healthy() *fakeHost {
	return &fakeHost{
		kvm: kvmprobe.Result{Usable: true},
		paths: map[string]string{
			"firecracker": "/usr/bin/firecracker", "jailer": "/usr/bin/jailer",
			"qemu-system-x86_64": "/usr/bin/qemu-system-x86_64", "nft": "/usr/sbin/nft",
		},
		versions: map[string]string{
			"/usr/bin/firecracker": "Firecracker v1.12.0", "/usr/bin/jailer": "Jailer v1.12.0",
			"/usr/bin/qemu-system-x86_64": "QEMU emulator version 7.2.0", "/usr/sbin/nft": "nftables v1.0.6",
		},
		heads:   map[string][]byte{"/boot/vmlinux": elfKernel, "/boot/vmlinuz": bzImage},
		sizes:   map[string]int64{"/boot/root.cpio": 200 << 20},
		free:    100 << 30,
		sameFS:  true,
		mem:     32 << 30,
		links:   map[string]string{"lo": "device"},
		cgMount: "/sys/fs/cgroup", cgCtrls: []string{"cpuset", "cpu", "io", "memory", "pids"},
		kernels: map[string]*kconfig.Kernel{
			"/boot/vmlinux": kconfig.Parse("/boot/vmlinux", "test", []byte(allBuiltIn)),
			"/boot/vmlinuz": kconfig.Parse("/boot/vmlinuz", "test", []byte(allBuiltIn)),
		},
	}
}

func (h *fakeHost) KVM(context.Context) kvmprobe.Result { return h.kvm }
func (h *fakeHost) LookPath(name string) (string, error) {
	if p, ok := h.paths[name]; ok {
		return p, nil
	}
	return "", errors.New("executable file not found in $PATH")
}
func (h *fakeHost) Version(_ context.Context, path string) (string, error) {
	if v, ok := h.versions[path]; ok {
		return v, nil
	}
	return "", errors.New("exit status 1")
}
func (h *fakeHost) Head(path string, _ int) ([]byte, error) {
	if b, ok := h.heads[path]; ok {
		return b, nil
	}
	return nil, errors.New("open " + path + ": no such file or directory")
}
func (h *fakeHost) Size(path string) (int64, error)     { return h.sizes[path], nil }
func (h *fakeHost) Writable(string) error               { return h.writable }
func (h *fakeHost) Free(string) (uint64, error)         { return h.free, nil }
func (h *fakeHost) SameFS(string, string) (bool, error) { return h.sameFS, nil }
func (h *fakeHost) MemAvailable() (uint64, error)       { return h.mem, nil }
func (h *fakeHost) Links() (map[string]string, error)   { return h.links, h.linksErr }
func (h *fakeHost) Exists(path string) bool             { return !(h.noTun && path == "/dev/net/tun") }
func (h *fakeHost) Cgroup2() (string, []string, error)  { return h.cgMount, h.cgCtrls, h.cgroupErr }
func (h *fakeHost) KernelConfig(path, _ string) (*kconfig.Kernel, error) {
	if k, ok := h.kernels[path]; ok {
		return k, nil
	}
	return nil, errors.New("open " + path + ": no such file or directory")
}
func (h *fakeHost) KernelModules(_ string, names []string) ([]string, error) {
	h.askedModules = append(h.askedModules, names)
	if m, ok := h.modules[names[0]]; ok {
		return m, nil
	}
	return nil, errors.New("unknown kernel module " + names[0])
}

// testConfig is a two-pool configuration for a driver; Firecracker pools
// boot /boot/vmlinux, QEMU ones /boot/vmlinuz.
func testConfig(driver string) *config.Config {
	c := config.Defaults()
	c.VMM.Driver = driver
	c.VMM.Firecracker.UID, c.VMM.Firecracker.GID = 900, 900
	kernel := "/boot/vmlinuz"
	if driver == "firecracker" {
		kernel = "/boot/vmlinux"
	}
	for _, name := range []string{"small", "big"} {
		p := config.PoolDefaults()
		p.Name, p.Max = name, 2
		p.VM.Kernel, p.VM.RootInitramfs = kernel, "/boot/root.cpio"
		c.Pools = append(c.Pools, p)
	}
	c.Pools[1].VM.MemoryMiB = 4096
	return &c
}

func find(r Report, check string, st Status) *Finding {
	for i, f := range r.Findings {
		if f.Check == check && f.Status == st {
			return &r.Findings[i]
		}
	}
	return nil
}

func TestHealthyHostsPass(t *testing.T) {
	for _, driver := range []string{"firecracker", "qemu"} {
		r := Run(context.Background(), testConfig(driver), healthy())
		if r.Failed() {
			var b bytes.Buffer
			r.Write(&b)
			t.Errorf("%s: a healthy host failed:\n%s", driver, b.String())
		}
		for _, f := range r.Findings {
			if f.Status != OK {
				t.Errorf("%s: %s %s: %s", driver, f.Status, f.Check, f.Detail)
			}
		}
	}
}

// TestUnhealthyHosts: each broken piece of the host is reported as a
// failure naming the check, with a fix, and the exit status says so.
func TestUnhealthyHosts(t *testing.T) {
	cases := []struct {
		name   string
		driver string
		breaks func(h *fakeHost, c *config.Config)
		check  string
		detail string // in the finding's detail
		fix    string // in its fix
		pools  string // blocked pools
	}{
		{"PVM-only KVM under Firecracker", "firecracker",
			func(h *fakeHost, _ *config.Config) {
				h.kvm = kvmprobe.Result{Reason: "the test vCPU did not finish (paravirtual-only or broken KVM)"}
			},
			"kvm", "unusable for stock guests: the test vCPU did not finish", "vmm.driver: qemu", "big, small"},
		{"KVM insisted on for QEMU", "qemu",
			func(h *fakeHost, c *config.Config) {
				h.kvm = kvmprobe.Result{Reason: "open /dev/kvm: no such file or directory"}
				c.VMM.QEMU.Accel = "kvm"
			},
			"kvm", "unusable for stock guests", "accel: auto", "big, small"},
		{"no firecracker binary", "firecracker",
			func(h *fakeHost, _ *config.Config) { delete(h.paths, "firecracker") },
			"firecracker", "firecracker not found", "vmm.firecracker.binary", "big, small"},
		{"jailer that does not run", "firecracker",
			func(h *fakeHost, _ *config.Config) { delete(h.versions, "/usr/bin/jailer") },
			"jailer", "--version failed", "working jailer binary", "big, small"},
		{"bzImage for Firecracker", "firecracker",
			func(h *fakeHost, c *config.Config) { c.Pools[1].VM.Kernel = "/boot/vmlinuz" },
			"kernel", "pool big: /boot/vmlinuz is a bzImage", "uncompressed ELF vmlinux", "big"},
		{"unreadable kernel", "qemu",
			func(h *fakeHost, c *config.Config) { c.Pools[0].VM.Kernel = "/boot/gone" },
			"kernel", "no such file", "readable kernel", "small"},
		{"no nft", "qemu",
			func(h *fakeHost, _ *config.Config) { delete(h.paths, "nft") },
			"nftables", "nft not found", "install nftables", "big, small"},
		{"no netlink", "qemu",
			func(h *fakeHost, _ *config.Config) { h.linksErr = errors.New("operation not permitted") },
			"bridge", "netlink: operation not permitted", "CAP_NET_ADMIN", "big, small"},
		{"bridge name taken", "qemu",
			func(h *fakeHost, c *config.Config) { h.links[c.Network.Bridge] = "veth" },
			"bridge", "is a veth, not a bridge", "network.bridge", "big, small"},
		{"no /dev/net/tun", "qemu",
			func(h *fakeHost, _ *config.Config) { h.noTun = true },
			"tun", "/dev/net/tun is missing", "modprobe tun", "big, small"},
		{"cgroup v2 without controllers (hybrid host)", "firecracker",
			func(h *fakeHost, _ *config.Config) {
				h.cgMount, h.cgCtrls = "/sys/fs/cgroup/unified", []string{"hugetlb"}
			},
			"cgroup", "offers hugetlb, not the cpu and memory controller", "unified_cgroup_hierarchy", "big, small"},
		{"no cgroup v2", "firecracker",
			func(h *fakeHost, _ *config.Config) { h.cgMount, h.cgroupErr = "", errors.New("no cgroup2 mount") },
			"cgroup", "no cgroup v2 hierarchy", "mount cgroup2", "big, small"},
		{"read-only state dir", "qemu",
			func(h *fakeHost, _ *config.Config) { h.writable = errors.New("read-only file system") },
			"state_dir", "is not writable: read-only file system", "writable directory", "big, small"},
		{"disk too small for the pools' max", "qemu",
			func(h *fakeHost, _ *config.Config) { h.free = 500 << 20 },
			"disk", "500 MiB free", "lower the pools' max", "big, small"},
		{"memory too small for the pools' max", "firecracker",
			func(h *fakeHost, _ *config.Config) { h.mem = 4 << 30 },
			"memory", "4096 MiB available; every pool at its max needs 9472 MiB", "lower the pools' max", "big, small"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h, cfg := healthy(), testConfig(c.driver)
			c.breaks(h, cfg)
			r := Run(context.Background(), cfg, h)
			f := find(r, c.check, Fail)
			if f == nil {
				t.Fatalf("no failed %s check in %+v", c.check, r.Findings)
			}
			if !strings.Contains(f.Detail, c.detail) || !strings.Contains(f.Fix, c.fix) {
				t.Errorf("finding %q / fix %q, want %q / %q", f.Detail, f.Fix, c.detail, c.fix)
			}
			if !r.Failed() {
				t.Error("the report does not fail")
			}
			if got := strings.Join(r.Blocked(), ", "); got != c.pools {
				t.Errorf("blocked pools %q, want %q", got, c.pools)
			}
		})
	}
}

// TestTCGFallbackIsAWarning: with QEMU and accel auto, an unusable KVM
// is reported and the TCG fallback named, and every pool still runs.
func TestTCGFallbackIsAWarning(t *testing.T) {
	h := healthy()
	h.kvm = kvmprobe.Result{Reason: "open /dev/kvm: no such file or directory"}
	r := Run(context.Background(), testConfig("qemu"), h)
	f := find(r, "kvm", Warn)
	if f == nil || !strings.Contains(f.Detail, "unusable for stock guests") || !strings.Contains(f.Fix, "TCG") {
		t.Fatalf("kvm finding %+v", r.Findings)
	}
	if r.Failed() {
		t.Error("the TCG fallback failed the report")
	}
	var b bytes.Buffer
	r.Write(&b)
	if !strings.Contains(b.String(), "WARN  kvm") || !strings.Contains(b.String(), "result: every pool can run, with 1 warning\n") {
		t.Errorf("report:\n%s", b.String())
	}
}

// A KVM that ran the probe's code but refused a feature MSR it reports
// itself is left to QEMU under accel auto (the orchestrator asks it at
// start): a warning that says so, not the plain TCG fallback.
func TestRefusedMSRLeavesTheVerdictToQEMU(t *testing.T) {
	h := healthy()
	h.kvm = kvmprobe.Result{Reason: "the test vCPU refused feature MSR 0x10a", RefusedMSR: true}
	r := Run(context.Background(), testConfig("qemu"), h)
	if f := find(r, "kvm", Warn); f == nil || !strings.Contains(f.Detail, "refused feature MSR 0x10a") || !strings.Contains(f.Fix, "QEMU decides at start") {
		t.Errorf("kvm finding %+v", r.Findings)
	}
}

func TestSmallerProblemsWarn(t *testing.T) {
	h := healthy()
	h.versions["/usr/bin/jailer"] = "Jailer v1.11.0"
	h.sameFS = false
	r := Run(context.Background(), testConfig("firecracker"), h)
	if f := find(r, "jailer", Warn); f == nil || !strings.Contains(f.Detail, "v1.11.0 and firecracker v1.12.0 differ") {
		t.Errorf("no version mismatch warning: %+v", r.Findings)
	}
	if f := find(r, "state_dir", Warn); f == nil || !strings.Contains(f.Fix, "copied") {
		t.Errorf("no file system warning: %+v", r.Findings)
	}
	h = healthy()
	cfg := testConfig("qemu")
	cfg.Pools[0].VM.Kernel = "/boot/vmlinux"
	if f := find(Run(context.Background(), cfg, h), "kernel", Warn); f == nil || !strings.Contains(f.Fix, "PVH") {
		t.Error("an ELF kernel under QEMU is not warned about")
	}
}

func TestKernelFormat(t *testing.T) {
	for _, c := range []struct {
		head []byte
		want string
	}{{elfKernel, formatELF}, {bzImage, formatBzImage}, {[]byte("MZ"), "neither an ELF vmlinux nor a bzImage"}} {
		if got := kernelFormat(c.head); got != c.want {
			t.Errorf("kernelFormat = %q, want %q", got, c.want)
		}
	}
}
