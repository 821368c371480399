package daemon

import (
	"slices"
	"testing"

	"github.com/nixos-fireactions/nixos-fireactions/config"
)

// A pool that asks for Docker boots with Docker's kernel modules after its
// own; one that does not, or whose kernel has every driver built in (no
// kernel_modules), gets none added.
func TestPoolModulesAddDockersForCacheDocker(t *testing.T) {
	p := config.PoolDefaults()
	p.VM.KernelModules = []string{"virtio_mmio", "virtio_net"}
	if got := poolModules(p); !slices.Equal(got, p.VM.KernelModules) {
		t.Fatalf("without Docker: %v", got)
	}
	p.Cache.Docker = true
	got := poolModules(p)
	if !slices.Equal(got[:2], p.VM.KernelModules) || !slices.Contains(got, "br_netfilter") || !slices.Contains(got, "overlay") {
		t.Fatalf("with Docker: %v", got)
	}
	p.VM.KernelModules = nil
	if got := poolModules(p); len(got) != 0 {
		t.Fatalf("built-in drivers, with Docker: %v", got)
	}
}
