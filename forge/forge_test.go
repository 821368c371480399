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

func TestDeliveriesTakesEachIdOnceAndForgetsTheOldest(t *testing.T) {
	d := NewDeliveries(2)
	if !d.First("a") || d.First("a") {
		t.Fatal("a: want first once")
	}
	if !d.First("b") || !d.First("c") { // c pushes a out
		t.Fatal("b, c: want first")
	}
	if d.First("b") || d.First("c") {
		t.Fatal("b or c taken twice")
	}
	if !d.First("a") {
		t.Fatal("a was not forgotten after 2 newer ids")
	}
}
