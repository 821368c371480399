package initramfs

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// Every module Docker needs resolves, with its dependencies, from the
// Debian cloud kernel the e2e guests boot (make deps installs it).
func TestDockerModulesResolveOnTheCloudKernel(t *testing.T) {
	dirs, _ := filepath.Glob("/lib/modules/*-cloud-amd64")
	if len(dirs) == 0 {
		t.Fatal("no Debian cloud kernel modules in /lib/modules (make deps installs linux-image-cloud-amd64)")
	}
	mods, err := ResolveModules(dirs[0], ModulesFor([]string{"virtio_mmio"}, true))
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
	if n := len(got); n != 3+len(DockerModules)-2 {
		t.Fatalf("%d modules, want the pool's 3 and the %d Docker ones they lack: %v", n, len(DockerModules)-2, got)
	}
}
