package initramfs

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// fakeModules writes a modules tree: modules.dep lines and an empty .ko
// file for each module path named in them.
func fakeModules(t *testing.T, dep, builtin string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "modules.dep"), []byte(dep), 0o644); err != nil {
		t.Fatal(err)
	}
	if builtin != "" {
		if err := os.WriteFile(filepath.Join(dir, "modules.builtin"), []byte(builtin), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range strings.Fields(strings.ReplaceAll(dep, ":", " ")) {
		p := filepath.Join(dir, f)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(f), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// The fake tree: a chain (chain_a -> chain_b -> chain_c, with modules.dep
// listing only direct dependencies), a diamond (top -> left, right; both ->
// base), a dashed name, a compressed module, a cycle and a missing file.
const fakeDep = `kernel/chain/chain_a.ko: kernel/chain/chain_b.ko
kernel/chain/chain_b.ko: kernel/chain/chain_c.ko
kernel/chain/chain_c.ko:
kernel/d/top.ko: kernel/d/left.ko kernel/d/right.ko
kernel/d/left.ko: kernel/d/base.ko
kernel/d/right.ko: kernel/d/base.ko
kernel/d/base.ko:
kernel/net/dash-name.ko: kernel/d/base.ko
kernel/x/packed.ko.xz:
kernel/x/needs_packed.ko: kernel/x/packed.ko.xz
kernel/cyc/cyc_a.ko: kernel/cyc/cyc_b.ko
kernel/cyc/cyc_b.ko: kernel/cyc/cyc_a.ko
kernel/gone/gone.ko:
kernel/gone/needs_gone.ko: kernel/gone/gone.ko
`

func names(mods []Module) []string {
	var n []string
	for _, m := range mods {
		n = append(n, m.Name)
	}
	return n
}

func TestResolveModules(t *testing.T) {
	dir := fakeModules(t, fakeDep, "kernel/drivers/virtio/virtio_builtin.ko\n")
	os.Remove(filepath.Join(dir, "kernel/gone/gone.ko"))
	for _, c := range []struct {
		ask  []string
		want []string
	}{
		{[]string{"chain_a"}, []string{"chain_c", "chain_b", "chain_a"}},
		// Dependencies last-listed first, as modprobe does; base once.
		{[]string{"top"}, []string{"base", "right", "left", "top"}},
		// No duplicates across requests; names with '-' or '_', with or
		// without .ko; built-in modules skipped.
		{[]string{"left", "dash_name", "top", "chain-b", "left.ko", "virtio-builtin"}, []string{"base", "left", "dash_name", "right", "top", "chain_c", "chain_b"}},
		{nil, nil},
	} {
		mods, err := ResolveModules(dir, c.ask)
		if err != nil {
			t.Fatalf("%v: %v", c.ask, err)
		}
		if got := names(mods); !slices.Equal(got, c.want) {
			t.Errorf("%v: got %v, want %v", c.ask, got, c.want)
		}
	}

	mods, _ := ResolveModules(dir, []string{"dash-name"})
	want := []Module{
		{"base", filepath.Join(dir, "kernel/d/base.ko"), ModulesDir + "/01-base.ko"},
		{"dash_name", filepath.Join(dir, "kernel/net/dash-name.ko"), ModulesDir + "/02-dash_name.ko"},
	}
	if !slices.Equal(mods, want) {
		t.Errorf("got %+v, want %+v", mods, want)
	}
	if got := GuestPaths(mods); !slices.Equal(got, []string{want[0].GuestPath, want[1].GuestPath}) {
		t.Errorf("guest paths %v", got)
	}

	for ask, wantErr := range map[string]string{
		"nosuch":       "unknown kernel module nosuch",
		"packed":       "packed is compressed (packed.ko.xz)",
		"needs_packed": "packed is compressed",
		"cyc_a":        "cycle: cyc_a -> cyc_b -> cyc_a",
		"needs_gone":   "kernel module gone:",
	} {
		if _, err := ResolveModules(dir, []string{ask}); err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Errorf("%s: err %v, want %q", ask, err, wantErr)
		}
	}
	if _, err := ResolveModules(t.TempDir(), []string{"x"}); err == nil || !strings.Contains(err.Error(), "modules.dep") {
		t.Errorf("no modules.dep: %v", err)
	}
}

func TestResolveModulesMissingDependency(t *testing.T) {
	dir := fakeModules(t, "kernel/a.ko: kernel/b.ko\n", "")
	if _, err := ResolveModules(dir, []string{"a"}); err == nil || !strings.Contains(err.Error(), "b (needed by a)") {
		t.Errorf("err %v", err)
	}
}

// TestResolveModulesOnThisHost resolves the virtio drivers of the kernel
// the microVMs boot here (Debian's cloud kernel), when installed.
func TestResolveModulesOnThisHost(t *testing.T) {
	deps, _ := filepath.Glob("/lib/modules/*/modules.dep")
	if len(deps) == 0 {
		t.Fatal("no /lib/modules/*/modules.dep (make deps installs linux-image-cloud-amd64)")
	}
	for _, dep := range deps {
		dir := filepath.Dir(dep)
		mods, err := ResolveModules(dir, []string{"virtio_net", "virtio_mmio"})
		if err != nil {
			t.Errorf("%s: %v", dir, err)
			continue
		}
		got := names(mods)
		t.Logf("%s: %v", filepath.Base(dir), got)
		pos := map[string]int{}
		for i, n := range got {
			pos[n] = i
		}
		if _, ok := pos["virtio_net"]; !ok {
			t.Errorf("%s: virtio_net missing from %v", dir, got)
		}
		if _, ok := pos["virtio_mmio"]; !ok {
			t.Errorf("%s: virtio_mmio missing from %v", dir, got)
		}
		// Where these are modules (Debian's cloud kernel), their order.
		for _, before := range [][2]string{{"virtio_ring", "virtio"}, {"virtio", "virtio_net"}, {"failover", "net_failover"}, {"net_failover", "virtio_net"}, {"virtio", "virtio_mmio"}} {
			a, okA := pos[before[0]]
			b, okB := pos[before[1]]
			if okA && okB && a > b {
				t.Errorf("%s: %s loaded after %s: %v", dir, before[0], before[1], got)
			}
		}
		for _, m := range mods {
			if _, err := os.Stat(m.HostPath); err != nil {
				t.Error(err)
			}
		}
	}
}
