package pool

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/config"
	"github.com/nixos-fireactions/nixos-fireactions/forge"
	"github.com/nixos-fireactions/nixos-fireactions/internal/hosttest"
)

// goneForge owns a demand source at the forge (a GitHub scale set) that
// can be gone: then Register answers, as the GitHub driver does after
// delete-scaleset, an error that is forge.ErrDemandSourceDeleted.
type goneForge struct {
	*fakeForge
	gone atomic.Bool
	regs atomic.Int64 // Register calls
}

func (f *goneForge) Register(ctx context.Context, spec forge.RunnerSpec) (*forge.Runner, error) {
	f.regs.Add(1)
	if f.gone.Load() {
		return nil, fmt.Errorf("register runner %s: scale set: %w", spec.Name, forge.ErrDemandSourceDeleted)
	}
	return f.fakeForge.Register(ctx, spec)
}

func (f *goneForge) DeleteDemandSource(context.Context) error {
	f.gone.Store(true)
	return nil
}

const sourceGoneLog = "demand source at the forge is deleted"

// A pool with min_idle whose demand source is gone (its driver answers
// Register with forge.ErrDemandSourceDeleted) tries once, says so once,
// and starts nothing more, rather than retrying with back-off for ever;
// a reload hands its scope out again and it starts VMs again.
func TestDeletedDemandSourceStopsStarts(t *testing.T) {
	var gf *goneForge
	logs := &hosttest.SyncBuffer{}
	h := newHarnessForge(t, 1, 2, guestHangs, func(pc *config.Pool) { pc.Timeouts.Boot = time.Hour },
		slog.New(slog.NewTextHandler(logs, nil)),
		func(f *fakeForge) forge.Forge { gf = &goneForge{fakeForge: f}; gf.gone.Store(true); return gf })
	eventually(t, 5*time.Second, "a first start", func() bool { return gf.regs.Load() >= 1 })
	time.Sleep(2500 * time.Millisecond) // back-off would retry after 1 s and 2 s more
	if n := gf.regs.Load(); n != 1 {
		t.Fatalf("%d registrations after the demand source was gone, want the first only", n)
	}
	if n := strings.Count(logs.String(), sourceGoneLog); n != 1 {
		t.Fatalf("%d log lines saying the demand source is deleted, want 1", n)
	}
	gf.gone.Store(false)
	res, err := h.m.Reload(context.Background(), []config.Pool{h.m.poolList()[0].cfg}, map[string]forge.Forge{"p": gf})
	if err != nil || len(res.Unchanged) != 1 {
		t.Fatalf("reload: %+v, %v", res, err)
	}
	if st, _ := h.m.Pool("p"); st.SourceDeleted {
		t.Fatalf("pool status after the reload: %+v, want its demand source back", st)
	}
	eventually(t, 5*time.Second, "a VM after the reload", func() bool { return h.forge.runnerCount() == 1 })
}

// After delete-scaleset (Manager.DeleteDemandSource) the pool starts no
// VM, not even for a min_idle raised after it: no Register is tried.
func TestDeleteDemandSourceStopsStarts(t *testing.T) {
	var gf *goneForge
	h := newHarnessEvery(t, 10*time.Millisecond, filepath.Join(t.TempDir(), "vms"), 0, 2, guestHangs, nil,
		slog.New(slog.DiscardHandler), nil,
		func(f *fakeForge) forge.Forge { gf = &goneForge{fakeForge: f}; return gf })
	if st, _ := h.m.Pool("p"); st.SourceDeleted {
		t.Fatalf("pool status says its demand source is deleted before the delete: %+v", st)
	}
	if err := h.m.DeleteDemandSource(context.Background(), "p"); err != nil {
		t.Fatal(err)
	}
	if st, _ := h.m.Pool("p"); !st.SourceDeleted {
		t.Fatalf("pool status after delete-scaleset: %+v, want SourceDeleted", st)
	}
	one := 1
	if _, err := h.m.Scale("p", &one, nil); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	if n := gf.regs.Load(); n != 0 {
		t.Fatalf("%d registrations after the demand source was deleted, want none", n)
	}
}

// At start the forge is told the pool's capacity as it is now (its max:
// a pause does not outlive the process), not left with what a previous
// run told last.
func TestCapacityToldAtStart(t *testing.T) {
	var cf *capacityForge
	newHarnessForge(t, 0, 4, guestHangs, nil, slog.New(slog.DiscardHandler),
		func(f *fakeForge) forge.Forge { cf = &capacityForge{fakeForge: f}; return cf })
	eventually(t, 5*time.Second, "capacity told at start", func() bool { got, ok := cf.last(); return ok && got == 4 })
}

// stalledGoneForge refuses its first Register as a deleted demand
// source, but only once released: a reload can come in between.
type stalledGoneForge struct {
	*fakeForge
	first            atomic.Bool
	entered, release chan struct{}
}

func (f *stalledGoneForge) Register(ctx context.Context, spec forge.RunnerSpec) (*forge.Runner, error) {
	if f.first.CompareAndSwap(false, true) {
		close(f.entered)
		<-f.release
		return nil, fmt.Errorf("register runner %s: scale set: %w", spec.Name, forge.ErrDemandSourceDeleted)
	}
	return f.fakeForge.Register(ctx, spec)
}

// A Register refused as "demand source deleted" whose answer comes after
// a reload handed the scope out again is old news: the pool stays able
// to start VMs (it does, for min_idle) and its status does not say the
// source is deleted.
func TestDemandSourceRefusalBeforeReloadIsOldNews(t *testing.T) {
	var sf *stalledGoneForge
	h := newHarnessForge(t, 1, 2, guestHangs, func(pc *config.Pool) { pc.Timeouts.Boot = time.Hour },
		slog.New(slog.DiscardHandler),
		func(f *fakeForge) forge.Forge {
			sf = &stalledGoneForge{fakeForge: f, entered: make(chan struct{}), release: make(chan struct{})}
			return sf
		})
	select {
	case <-sf.entered:
	case <-time.After(5 * time.Second):
		close(sf.release)
		t.Fatal("no registration began")
	}
	res, err := h.m.Reload(context.Background(), []config.Pool{h.m.poolList()[0].cfg}, map[string]forge.Forge{"p": sf})
	close(sf.release)
	if err != nil || len(res.Unchanged) != 1 {
		t.Fatalf("reload: %+v, %v", res, err)
	}
	eventually(t, 5*time.Second, "a VM after the stale refusal", func() bool { return h.forge.runnerCount() == 1 })
	if st, _ := h.m.Pool("p"); st.SourceDeleted {
		t.Fatalf("pool status after a refusal older than the reload: %+v", st)
	}
}
