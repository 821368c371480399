package pool

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/config"
	"github.com/nixos-fireactions/nixos-fireactions/forge"
)

// capacityForge is the fake forge that takes its pool's capacity
// (forge.CapacitySetter), as a GitHub scale set does, recording each.
type capacityForge struct {
	*fakeForge
	capMu sync.Mutex
	told  []int
}

func (f *capacityForge) SetCapacity(_ context.Context, n int) error {
	f.capMu.Lock()
	defer f.capMu.Unlock()
	f.told = append(f.told, n)
	return nil
}

func (f *capacityForge) last() (int, bool) {
	f.capMu.Lock()
	defer f.capMu.Unlock()
	if len(f.told) == 0 {
		return 0, false
	}
	return f.told[len(f.told)-1], true
}

// The forge's capacity for a pool follows its max, through Scale and a
// size-only reload, and is 0 while it is paused.
func TestCapacityFollowsMaxAndPause(t *testing.T) {
	var cf *capacityForge
	h := newHarnessForge(t, 0, 2, guestHangs, nil, slog.New(slog.NewTextHandler(io.Discard, nil)),
		func(f *fakeForge) forge.Forge { cf = &capacityForge{fakeForge: f}; return cf })
	want := func(step string, n int) {
		t.Helper()
		eventually(t, 5*time.Second, step, func() bool { got, ok := cf.last(); return ok && got == n })
	}
	five := 5
	if _, err := h.m.Scale("p", nil, &five); err != nil {
		t.Fatal(err)
	}
	want("capacity 5 after Scale", 5)
	if _, err := h.m.SetPaused("p", true); err != nil {
		t.Fatal(err)
	}
	want("capacity 0 while paused", 0)
	if _, err := h.m.SetPaused("p", false); err != nil {
		t.Fatal(err)
	}
	want("capacity 5 when resumed", 5)
	pc := h.m.poolList()[0].cfg
	pc.Max = 3
	res, err := h.m.Reload(context.Background(), []config.Pool{pc}, map[string]forge.Forge{"p": cf})
	if err != nil || len(res.Scaled) != 1 {
		t.Fatalf("reload: %+v, %v; want p scaled", res, err)
	}
	want("capacity 3 after a size-only reload", 3)
}
