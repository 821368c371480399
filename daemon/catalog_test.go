package daemon

import (
	"context"
	"log/slog"
	"slices"
	"testing"

	"github.com/nixos-fireactions/nixos-fireactions/catalog"
	"github.com/nixos-fireactions/nixos-fireactions/config"
	"github.com/nixos-fireactions/nixos-fireactions/vmm"
)

// The catalog is the one list of driver names: every name the
// configuration accepts has a factory here, and every factory a name.
func TestEveryCatalogNameHasAFactory(t *testing.T) {
	var forges, vmms []string
	for name := range forgeDrivers("dev") {
		forges = append(forges, name)
	}
	for name := range vmmDrivers() {
		vmms = append(vmms, name)
	}
	for _, c := range []struct {
		what             string
		names, factories []string
	}{
		{"forge types", catalog.Forges(), forges},
		{"VMM drivers", catalog.VMMs(), vmms},
	} {
		want := slices.Sorted(slices.Values(c.names))
		slices.Sort(c.factories)
		if !slices.Equal(c.factories, want) {
			t.Errorf("%s: factories for %v, the catalog names %v", c.what, c.factories, want)
		}
	}
}

// The catalog's warm-start drivers are exactly the drivers that save and
// restore (vmm.Saver): a driver whose machines became Warm without the
// list naming it, or a name whose driver cannot, fails here.
func TestWarmVMMsAreTheDriversThatSave(t *testing.T) {
	cfg := &config.Config{StateDir: t.TempDir()}
	cfg.VMM.QEMU.Accel = "tcg"
	off := false
	cfg.VMM.Firecracker.Jailer = &off
	var savers []string
	for name, build := range vmmDrivers() {
		h, err := build(context.Background(), cfg, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatalf("driver %s: %v", name, err)
		}
		if _, ok := h.(vmm.Saver); ok {
			savers = append(savers, name)
		}
	}
	slices.Sort(savers)
	want := slices.Sorted(slices.Values(catalog.WarmVMMs()))
	if !slices.Equal(savers, want) {
		t.Errorf("drivers that save and restore: %v; catalog.WarmVMMs: %v", savers, want)
	}
	if len(savers) == 0 {
		t.Error("no driver saves: the check above compared nothing")
	}
}
