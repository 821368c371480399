package pool

import (
	"testing"

	"github.com/nixos-fireactions/nixos-fireactions/forge"
)

func TestToStart(t *testing.T) {
	tests := []struct {
		name                 string
		c                    counts
		minIdle, max, queued int
		want                 int
	}{
		{"empty pool fills min_idle", counts{}, 1, 2, 0, 1},
		{"min_idle met, nothing queued", counts{unbusy: 1}, 1, 2, 0, 0},
		{"queued job adds one beyond min_idle", counts{unbusy: 1}, 1, 2, 1, 1},
		{"max caps the total", counts{unbusy: 1}, 1, 2, 5, 1},
		{"busy VMs count against max", counts{busy: 2}, 1, 2, 3, 0},
		{"busy VMs do not count as idle", counts{busy: 1}, 1, 3, 0, 1},
		{"min_idle 0 starts only for jobs", counts{}, 0, 4, 2, 2},
		{"more unbusy than wanted starts none", counts{unbusy: 3}, 1, 5, 0, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := toStart(tc.c, tc.minIdle, tc.max, tc.queued); got != tc.want {
				t.Fatalf("toStart(%+v, min_idle=%d, max=%d, queued=%d) = %d, want %d", tc.c, tc.minIdle, tc.max, tc.queued, got, tc.want)
			}
		})
	}
}

func TestSurplus(t *testing.T) {
	if got := surplus(counts{unbusy: 3, busy: 4}, 1, 1); got != 1 {
		t.Fatalf("surplus = %d, want 1", got)
	}
	if got := surplus(counts{unbusy: 1}, 1, 0); got != 0 {
		t.Fatalf("surplus = %d, want 0", got)
	}
}

func TestAssignFirstMatchingPoolInOrder(t *testing.T) {
	pools := []poolView{
		{name: "small", forge: "g", labels: []string{"linux", "small"}},
		{name: "any", forge: "g", labels: []string{"linux", "small", "large"}},
		{name: "other-forge", forge: "h", labels: []string{"linux"}},
	}
	jobs := map[string][]forge.Job{
		"g": {
			{ID: "1", Labels: []string{"linux"}},
			{ID: "2", Labels: []string{"large"}},
			{ID: "3", Labels: []string{"gpu"}},
			{ID: "4", Labels: nil},
		},
		"h": {{ID: "5", Labels: []string{"linux"}}},
	}
	per, unserved := assign(pools, jobs)
	if len(per["small"]) != 1 || len(per["any"]) != 1 || len(per["other-forge"]) != 1 || per["any"][0].ID != "2" {
		t.Fatalf("per pool = %v", per)
	}
	if len(unserved) != 2 || unserved[0].ID != "3" || unserved[1].ID != "4" {
		t.Fatalf("unserved = %+v, want jobs 3 and 4", unserved)
	}
}

// TestAssignUntaggedJobsOnlyToRunUntaggedPools: as GitLab matches runners,
// a job without tags goes only to a pool that takes untagged jobs, and a
// tagged job still needs all its tags offered there.
func TestAssignUntaggedJobsOnlyToRunUntaggedPools(t *testing.T) {
	pools := []poolView{
		{name: "tagged-only", forge: "gl", labels: []string{"linux"}},
		{name: "untagged-too", forge: "gl", labels: []string{"linux", "big"}, untagged: true},
	}
	jobs := map[string][]forge.Job{"gl": {
		{ID: "untagged"}, {ID: "linux", Labels: []string{"linux"}},
		{ID: "big", Labels: []string{"big"}}, {ID: "gpu", Labels: []string{"gpu"}},
	}}
	per, unserved := assign(pools, jobs)
	ids := func(js []forge.Job) (out []string) {
		for _, j := range js {
			out = append(out, j.ID)
		}
		return out
	}
	if got := ids(per["tagged-only"]); len(got) != 1 || got[0] != "linux" {
		t.Errorf("tagged-only pool got %v, want [linux]", got)
	}
	if got := ids(per["untagged-too"]); len(got) != 2 || got[0] != "untagged" || got[1] != "big" {
		t.Errorf("run_untagged pool got %v, want [untagged big]", got)
	}
	if got := ids(unserved); len(got) != 1 || got[0] != "gpu" {
		t.Errorf("unserved = %v, want [gpu]", got)
	}
}
