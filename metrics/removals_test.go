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
	if got := poolGauge(t, m, "fireactions_runner_removals_pending"); len(got) != 2 || got["a"] != 2 || got["b"] != 0 {
		t.Fatalf("fireactions_runner_removals_pending = %v, want a=2 b=0", got)
	}
}

// A pool whose demand source at the forge was deleted is a gauge at 1;
// every other pool's reads 0, from the start.
func TestDeletedDemandSourceIsAGaugePerPool(t *testing.T) {
	m := New(t.TempDir())
	m.WatchPools(poolsStub{{Name: "a", SourceDeleted: true}, {Name: "b"}})
	if got := poolGauge(t, m, "fireactions_pool_demand_source_deleted"); len(got) != 2 || got["a"] != 1 || got["b"] != 0 {
		t.Fatalf("fireactions_pool_demand_source_deleted = %v, want a=1 b=0", got)
	}
}

// poolGauge is a gauge's value per pool, gathered from m.
func poolGauge(t *testing.T, m *Metrics, name string) map[string]float64 {
	t.Helper()
	families, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, mt := range f.GetMetric() {
			got[mt.GetLabel()[0].GetValue()] = mt.GetGauge().GetValue()
		}
	}
	return got
}
