package doctor

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nixos-fireactions/nixos-fireactions/config"
	"github.com/nixos-fireactions/nixos-fireactions/kconfig"
)

// modular is a distribution kernel's configuration: the virtio drivers
// and overlay are modules, erofs is missing.
const modular = "CONFIG_VIRTIO=m\nCONFIG_VIRTIO_MMIO=m\nCONFIG_VIRTIO_NET=m\nCONFIG_VIRTIO_BLK=m\nCONFIG_EXT4_FS=y\nCONFIG_OVERLAY_FS=m\n# CONFIG_EROFS_FS is not set\n"

// Each pool's kernel must have what its guests use, built in or loaded
// through kernel_modules: a pool that lacks a driver fails, naming the
// pool, the driver and the fix; a kernel whose configuration cannot be
// found is a warning, not a pass.
func TestPoolKernelsHaveTheirGuestDrivers(t *testing.T) {
	cases := []struct {
		name    string
		kernel  *kconfig.Kernel
		tune    func(p *config.Pool)
		modules map[string][]string
		status  Status
		want    []string // in the pool's drivers findings (detail and fix)
	}{
		{name: "built in", kernel: kconfig.Parse("/boot/vmlinuz", "/boot/config-x", []byte(allBuiltIn)),
			status: OK, want: []string{"virtio_mmio, virtio_net built in"}},
		{name: "modules not loaded", kernel: kconfig.Parse("/boot/vmlinuz", "/boot/config-x", []byte(modular)),
			status: Fail, want: []string{"pool small", "virtio_mmio", "virtio_net", "only as a module", "add virtio_mmio to pool small's vm.kernel_modules"}},
		{name: "modules loaded", kernel: kconfig.Parse("/boot/vmlinuz", "/boot/config-x", []byte(modular)),
			tune:    func(p *config.Pool) { p.VM.KernelModules = []string{"virtio_mmio", "virtio_net"} },
			modules: map[string][]string{"virtio_mmio": {"virtio", "virtio_mmio", "virtio_net"}},
			status:  OK, want: []string{"virtio_mmio, virtio_net from kernel_modules"}},
		{name: "image pool without erofs", kernel: kconfig.Parse("/boot/vmlinuz", "/boot/config-x", []byte(modular)),
			tune: func(p *config.Pool) {
				p.VM.Image, p.VM.RootInitramfs = "ghcr.io/org/runner:v1", ""
				p.VM.KernelModules = []string{"virtio_mmio", "virtio_net", "virtio_blk", "overlay"}
			},
			modules: map[string][]string{"virtio_mmio": {"virtio", "virtio_mmio", "virtio_net", "virtio_blk", "overlay"}},
			status:  Fail, want: []string{"lacks erofs", "CONFIG_EROFS_FS is not set", "CONFIG_EROFS_FS=y"}},
		{name: "unknown configuration", kernel: &kconfig.Kernel{Path: "/boot/vmlinuz", Source: "no /boot/config-x"},
			status: Warn, want: []string{"cannot tell whether kernel /boot/vmlinuz has virtio_mmio, virtio_net", "no /boot/config-x", "CONFIG_IKCONFIG"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h, cfg := healthy(), testConfig("qemu")
			cfg.Pools = cfg.Pools[:1]
			h.kernels["/boot/vmlinuz"], h.modules = c.kernel, c.modules
			if c.tune != nil {
				c.tune(&cfg.Pools[0])
			}
			var r Report
			checkDrivers(&r, cfg, h)
			if len(r.Findings) == 0 {
				t.Fatal("no drivers finding")
			}
			var text strings.Builder
			for _, f := range r.Findings {
				if f.Status != c.status {
					t.Errorf("%s drivers: %s (fix: %s); want %s", f.Status, f.Detail, f.Fix, c.status)
				}
				text.WriteString(f.Detail + "\n" + f.Fix + "\n")
			}
			for _, w := range c.want {
				if !strings.Contains(text.String(), w) {
					t.Errorf("findings lack %q:\n%s", w, text.String())
				}
			}
			if blocked := strings.Join(r.Blocked(), ","); (c.status == Fail) != (blocked == "small") {
				t.Errorf("blocked pools %q with status %s", blocked, c.status)
			}
		})
	}
}

// Debian's cloud kernel (installed here) has virtio_mmio and virtio_net as
// modules only: a pool booting it fails doctor without kernel_modules and
// passes with them, as the system host reads /boot/config-<version> and
// the module tree.
func TestDebianCloudKernelNeedsItsVirtioModules(t *testing.T) {
	ks, _ := filepath.Glob("/boot/vmlinuz-*-cloud-amd64")
	if len(ks) == 0 {
		t.Fatal("no Debian cloud kernel in /boot: install linux-image-cloud-amd64 (make deps)")
	}
	kernel := ks[len(ks)-1]
	modules := "/lib/modules/" + strings.TrimPrefix(filepath.Base(kernel), "vmlinuz-")
	cfg := config.Defaults()
	p := config.PoolDefaults()
	p.Name, p.VM.Kernel, p.VM.ModulesDir = "debian", kernel, modules
	cfg.Pools = []config.Pool{p}

	var bare Report
	checkDrivers(&bare, &cfg, System{})
	if !bare.Failed() || len(bare.Findings) != 2 {
		t.Fatalf("without kernel_modules: %+v, want two failures", bare.Findings)
	}
	for i, mod := range []string{"virtio_mmio", "virtio_net"} {
		f := bare.Findings[i]
		if !strings.Contains(f.Detail, "pool debian") || !strings.Contains(f.Detail, mod) || !strings.Contains(f.Fix, "add "+mod+" to pool debian's vm.kernel_modules") {
			t.Errorf("finding %q / %q, want the pool, %s and the fix", f.Detail, f.Fix, mod)
		}
	}

	cfg.Pools[0].VM.KernelModules = []string{"virtio_mmio", "virtio_net"}
	var loaded Report
	checkDrivers(&loaded, &cfg, System{})
	if loaded.Failed() || len(loaded.Findings) != 1 || loaded.Findings[0].Status != OK ||
		!strings.Contains(loaded.Findings[0].Detail, "virtio_mmio, virtio_net from kernel_modules (per /boot/config-") {
		t.Fatalf("with kernel_modules: %+v", loaded.Findings)
	}
}

// A pool that asks for Docker has Docker's modules resolved with its own
// (as its boot archive will), so doctor fails one its kernel lacks.
func TestDockerPoolsModulesAreChecked(t *testing.T) {
	cfg := config.Defaults()
	p := config.PoolDefaults()
	p.Name, p.VM.Kernel = "docker", "/boot/vmlinuz"
	p.VM.KernelModules = []string{"virtio_mmio", "virtio_net"}
	cfg.Pools = []config.Pool{p}
	for _, docker := range []bool{false, true} {
		cfg.Pools[0].Cache.Docker = docker
		h := &fakeHost{kernels: map[string]*kconfig.Kernel{"/boot/vmlinuz": kconfig.Parse("/boot/vmlinuz", "/boot/config-x", []byte(modular))}}
		var r Report
		checkDrivers(&r, &cfg, h)
		if len(h.askedModules) != 1 || slices.Contains(h.askedModules[0], "br_netfilter") != docker {
			t.Fatalf("cache.docker %v: modules resolved %v", docker, h.askedModules)
		}
	}
}
