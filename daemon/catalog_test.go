package daemon

import (
	"slices"
	"testing"

	"github.com/nixos-fireactions/nixos-fireactions/catalog"
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
