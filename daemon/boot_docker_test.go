package daemon

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nixos-fireactions/nixos-fireactions/internal/hosttest"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
	"github.com/nixos-fireactions/nixos-fireactions/catalog"
	"github.com/nixos-fireactions/nixos-fireactions/config"
	"github.com/nixos-fireactions/nixos-fireactions/initramfs"
)

// A Docker pool's boot archive holds both iptables back ends' modules; a
// VM loads those of its image's back end only, and a VM whose image's
// back end is unknown (or a pool without Docker) all of the archive's.
func TestBootModulesFollowTheImagesIPTables(t *testing.T) {
	b := cloudKernelBootFiles(t, []string{"virtio_mmio"}, map[string]func(*config.Pool){
		"d":     func(p *config.Pool) { p.Cache.Docker = true },
		"plain": func(*config.Pool) {},
	})
	has := func(paths []string, mod string) bool {
		return slices.ContainsFunc(paths, func(p string) bool { return strings.HasSuffix(p, "-"+mod+".ko") })
	}
	all := b.guestModules("d", nil)
	nft := b.guestModules("d", &agentproto.Root{Netfilter: initramfs.NFT})
	legacy := b.guestModules("d", &agentproto.Root{Netfilter: initramfs.Legacy})
	if !has(all, "nft_compat") || !has(all, "iptable_nat") {
		t.Fatalf("the Docker pool's archive lacks a back end: %v", all)
	}
	if !has(nft, "nft_compat") || has(nft, "iptable_nat") || !has(nft, "bridge") || !has(nft, "virtio_mmio") {
		t.Errorf("an nft image's VM loads %v", nft)
	}
	if has(legacy, "nft_compat") || !has(legacy, "iptable_nat") || !has(legacy, "bridge") || !has(legacy, "virtio_mmio") {
		t.Errorf("a legacy image's VM loads %v", legacy)
	}
	if got := b.guestModules("d", &agentproto.Root{}); !slices.Equal(got, all) {
		t.Errorf("an image with both back ends: %v, want the archive's %v", got, all)
	}
	if got := b.guestModules("plain", &agentproto.Root{Netfilter: initramfs.NFT}); has(got, "bridge") || !has(got, "virtio_mmio") {
		t.Errorf("a pool without Docker: %v", got)
	}
}

// A warm-start pool's VMs load the driver of their identity channel
// without the pool listing it — QEMU's virtio console, Firecracker's
// vsock transport — and a cold pool's do not.
func TestWarmPoolsLoadTheIdentityPortsDriver(t *testing.T) {
	loads := func(paths []string, mod string) bool {
		return slices.ContainsFunc(paths, func(p string) bool {
			return strings.HasSuffix(p, "/"+mod+".ko") || strings.HasSuffix(p, "-"+mod+".ko")
		})
	}
	for driver, mods := range map[string][]string{
		catalog.QEMU:        {"virtio_console"},
		catalog.Firecracker: {"vsock", "vmw_vsock_virtio_transport_common", "vmw_vsock_virtio_transport"},
	} {
		b := cloudKernelBootFilesOf(t, driver, []string{"virtio_mmio", "virtio_net"}, map[string]func(*config.Pool){
			"warm": func(p *config.Pool) { p.WarmStart = true },
			"cold": func(*config.Pool) {},
		})
		for _, m := range mods {
			if got := b.guestModules("warm", nil); !loads(got, m) {
				t.Errorf("%s: a warm pool's VMs load %v: no %s", driver, got, m)
			}
			if got := b.guestModules("cold", nil); loads(got, m) {
				t.Errorf("%s: a cold pool's VMs load %s: %v", driver, m, got)
			}
		}
	}
}

// cloudKernelBootFiles is the boot files of pools named by pools' keys,
// each listing modules from the Debian cloud kernel's tree and then
// changed by its function.
func cloudKernelBootFiles(t *testing.T, modules []string, pools map[string]func(*config.Pool)) *bootFiles {
	t.Helper()
	return cloudKernelBootFilesOf(t, catalog.QEMU, modules, pools)
}

// cloudKernelBootFilesOf is cloudKernelBootFiles under VMM driver.
func cloudKernelBootFilesOf(t *testing.T, driver string, modules []string, pools map[string]func(*config.Pool)) *bootFiles {
	t.Helper()
	tree := hosttest.CloudKernelModules(t)
	dir := t.TempDir()
	agent, root := filepath.Join(dir, "agent"), filepath.Join(dir, "root.cpio")
	for _, f := range []string{agent, root} {
		if err := os.WriteFile(f, []byte("x"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cfg := &config.Config{}
	cfg.VMM.Driver = driver
	for name, change := range pools {
		var p config.Pool
		p.Name = name
		p.VM.KernelModules, p.VM.ModulesDir, p.VM.RootInitramfs = modules, tree, root
		change(&p)
		cfg.Pools = append(cfg.Pools, p)
	}
	b, err := newBootFiles(cfg, agent, filepath.Join(dir, "boot"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}
