package pool

import (
	"context"
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
