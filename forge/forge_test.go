package forge

import "testing"

func TestMatchLabels(t *testing.T) {
	offered := []string{"linux", "x64", "big"}
	tests := []struct {
		job  []string
		want bool
	}{
		{[]string{"linux"}, true},
		{[]string{"linux", "big"}, true},
		{[]string{"linux", "gpu"}, false},
		{nil, false},
		{[]string{"Linux"}, false},
	}
	for _, tc := range tests {
		if got := MatchLabels(tc.job, offered); got != tc.want {
			t.Errorf("MatchLabels(%v) = %v, want %v", tc.job, got, tc.want)
		}
	}
}
