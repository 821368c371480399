package pool

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/config"
	"github.com/nixos-fireactions/nixos-fireactions/forge"
)

// Drain tells the drivers to stop telling queue changes (NotifyQueue
// nil): a GitHub scale set's session is let go, so GitHub gives its jobs
// to other hosts while this one drains.
func TestDrainStopsQueueNotifiers(t *testing.T) {
	var nf *notifyingForge
	h := newHarnessEvery(t, time.Hour, filepath.Join(t.TempDir(), "vms"), 0, 1, guestHangs,
		func(pc *config.Pool) { pc.Timeouts.Boot = time.Hour },
		slog.New(slog.NewTextHandler(io.Discard, nil)), nil,
		func(f *fakeForge) forge.Forge { nf = &notifyingForge{fakeForge: f}; return nf })
	eventually(t, 5*time.Second, "the first full pass", func() bool { return nf.reads.Load() == 1 })
	nf.mu.Lock()
	listening := nf.notify != nil
	nf.mu.Unlock()
	if !listening {
		t.Fatal("the driver was never told where to send queue changes")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_ = h.m.Drain(ctx)
	nf.mu.Lock()
	defer nf.mu.Unlock()
	if nf.notify != nil {
		t.Fatal("after Drain the driver still tells its queue changes")
	}
}

// deletingForge owns a demand source at the forge (a GitHub scale set).
type deletingForge struct {
	*fakeForge
	deleted int
}

func (f *deletingForge) DeleteDemandSource(context.Context) error {
	f.deleted++
	return nil
}

// DeleteDemandSource reaches the pool's driver; a pool whose driver owns
// no demand source, or an unknown pool, is told so.
func TestDeleteDemandSource(t *testing.T) {
	var df *deletingForge
	h := newHarnessEvery(t, time.Hour, filepath.Join(t.TempDir(), "vms"), 0, 1, guestHangs, nil,
		slog.New(slog.NewTextHandler(io.Discard, nil)), nil,
		func(f *fakeForge) forge.Forge { df = &deletingForge{fakeForge: f}; return df })
	name := h.m.pools[0].cfg.Name
	if err := h.m.DeleteDemandSource(context.Background(), name); err != nil || df.deleted != 1 {
		t.Fatalf("delete: %v, deleted %d times", err, df.deleted)
	}
	if err := h.m.DeleteDemandSource(context.Background(), "nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown pool: %v", err)
	}
	plain := newHarness(t, 0, 1, guestHangs, nil)
	if err := plain.m.DeleteDemandSource(context.Background(), plain.m.pools[0].cfg.Name); !errors.Is(err, forge.ErrNoDemandSource) {
		t.Fatalf("a driver without a demand source: %v", err)
	}
}
