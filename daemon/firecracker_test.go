package daemon

import "testing"

// TestIDRange: the logged range is one id per address of the network,
// the VM at offset n running as first+n.
func TestIDRange(t *testing.T) {
	for _, c := range []struct {
		first int
		cidr  string
		want  string
	}{
		{64000, "10.200.0.0/24", "64000-64255"},
		{100000, "10.200.0.0/30", "100000-100003"},
		{64000, "10.0.0.0/16", "64000-129535"},
		{64000, "not a prefix", "64000+"},
	} {
		if got := idRange(c.first, c.cidr); got != c.want {
			t.Errorf("idRange(%d, %q) = %q, want %q", c.first, c.cidr, got, c.want)
		}
	}
}
