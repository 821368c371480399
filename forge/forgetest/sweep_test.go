package forgetest

import (
	"slices"
	"testing"
)

// What one caller does with the hosts it got never changes the hosts the
// next sweep check runs with.
func TestSweepHostsCannotBeChangedByACaller(t *testing.T) {
	got := SweepHosts()
	want := slices.Clone(got)
	got[0] = "changed"
	if again := SweepHosts(); !slices.Equal(again, want) {
		t.Fatalf("SweepHosts() after a caller changed its result = %v, want %v", again, want)
	}
}
