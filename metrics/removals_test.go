package metrics

import (
	"testing"

	"github.com/nixos-fireactions/nixos-fireactions/pool"
)

type poolsStub []pool.PoolStatus

func (p poolsStub) Pools() []pool.PoolStatus { return p }

// Runner removals still to be confirmed at the forge are a gauge per pool.
func TestPendingRunnerRemovalsAreAGaugePerPool(t *testing.T) {
	m := New(t.TempDir())
	m.WatchPools(poolsStub{{Name: "a", RemovalsPending: 2}, {Name: "b"}})
	families, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		if f.GetName() != "fireactions_runner_removals_pending" {
			continue
		}
		for _, mt := range f.GetMetric() {
			got[mt.GetLabel()[0].GetValue()] = mt.GetGauge().GetValue()
		}
	}
	if len(got) != 2 || got["a"] != 2 || got["b"] != 0 {
		t.Fatalf("fireactions_runner_removals_pending = %v, want a=2 b=0", got)
	}
}
