package initramfs

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nixos-fireactions/nixos-fireactions/internal/hosttest"
)

// Every module Docker needs resolves, with its dependencies, from the
// Debian cloud kernel the e2e guests boot (make deps installs it).
func TestDockerModulesResolveOnTheCloudKernel(t *testing.T) {
	tree := hosttest.CloudKernelModules(t)
	mods, err := ResolveModules(tree, ModulesFor([]string{"virtio_mmio"}, true))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range mods {
		got = append(got, m.Name)
		if _, err := os.Stat(m.HostPath); err != nil {
			t.Error(err)
		}
	}
	for _, want := range []string{"virtio_mmio", "bridge", "stp", "llc", "veth", "br_netfilter", "overlay", "nft_compat", "xt_MASQUERADE", "iptable_nat"} {
		if !slices.Contains(got, want) {
			t.Errorf("resolved %v lacks %s", got, want)
		}
	}
}

// ModulesFor keeps the pool's order and adds each Docker module once,
// whichever spelling the pool used, and only for Docker and a pool with
// modules.
func TestModulesFor(t *testing.T) {
	pool := []string{"virtio-net", "br-netfilter", "overlay"}
	if got := ModulesFor(pool, false); !slices.Equal(got, pool) {
		t.Fatalf("without Docker: %v", got)
	}
	if got := ModulesFor(nil, true); len(got) != 0 {
		t.Fatalf("built-in drivers, with Docker: %v", got)
	}
	got := ModulesFor(pool, true)
	if got[0] != "virtio-net" || got[1] != "br-netfilter" || got[2] != "overlay" {
		t.Fatalf("the pool's modules moved: %v", got)
	}
	if n, all := len(got), len(DockerModules("")); n != 3+all-2 {
		t.Fatalf("%d modules, want the pool's 3 and the %d Docker ones they lack: %v", n, all-2, got)
	}
}

// A guest loads, of the boot archive's modules (both back ends), only its
// image's back end's: an nft image no ip_tables, a legacy image no
// nf_tables; both get the pool's own and Docker's common ones, in the
// archive's order.
func TestDockerBackendModulesOnTheCloudKernel(t *testing.T) {
	tree := hosttest.CloudKernelModules(t)
	pool := []string{"virtio_mmio"}
	all, err := ResolveModules(tree, ModulesFor(pool, true))
	if err != nil {
		t.Fatal(err)
	}
	by, err := DockerBackendModules(tree, pool, all)
	if err != nil {
		t.Fatal(err)
	}
	base := func(paths []string) []string {
		var out []string
		for _, p := range paths {
			n := filepath.Base(p)
			out = append(out, moduleName(n[strings.Index(n, "-")+1:]))
		}
		return out
	}
	nft, legacy := base(by[NFT]), base(by[Legacy])
	for _, c := range []struct {
		name       string
		got        []string
		want, none []string
	}{
		{NFT, nft, []string{"virtio_mmio", "bridge", "br_netfilter", "overlay", "nf_tables", "nft_compat", "nft_chain_nat", "xt_MASQUERADE"}, []string{"ip_tables", "iptable_nat", "iptable_filter"}},
		{Legacy, legacy, []string{"virtio_mmio", "bridge", "br_netfilter", "overlay", "ip_tables", "iptable_nat", "iptable_filter", "xt_MASQUERADE"}, []string{"nf_tables", "nft_compat", "nft_chain_nat"}},
	} {
		for _, w := range c.want {
			if !slices.Contains(c.got, w) {
				t.Errorf("%s image: %v lacks %s", c.name, c.got, w)
			}
		}
		for _, n := range c.none {
			if slices.Contains(c.got, n) {
				t.Errorf("%s image loads %s: %v", c.name, n, c.got)
			}
		}
		// In the archive's order: each path's index rises.
		idx := map[string]int{}
		for i, m := range all {
			idx[m.GuestPath] = i
		}
		paths := by[c.name]
		for i := 1; i < len(paths); i++ {
			if idx[paths[i]] <= idx[paths[i-1]] {
				t.Errorf("%s: %s before %s, not the archive's order", c.name, paths[i-1], paths[i])
			}
		}
	}
	if len(by[NFT])+len(by[Legacy]) <= len(all) {
		t.Errorf("the back ends share too little: %d + %d of %d", len(by[NFT]), len(by[Legacy]), len(all))
	}
	if by, err := DockerBackendModules(tree, nil, nil); err != nil || len(by) != 0 {
		t.Errorf("built-in drivers: %v, %v", by, err)
	}
	// A module the archive lacks is an error, not a guest without it.
	if _, err := DockerBackendModules(tree, pool, all[:len(all)-1]); err == nil {
		t.Error("an archive short of a module passed")
	}
}
