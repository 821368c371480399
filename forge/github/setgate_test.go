package github

import (
	"context"
	"errors"
	"testing"
	"time"
)

// A delete waiting for the gate keeps new registers out; when its
// context ends it gives up and lets them in again.
func TestSetGateAbandonedHoldLetsSharersIn(t *testing.T) {
	var g setGate
	if err := g.share(context.Background()); err != nil {
		t.Fatal(err)
	}
	hctx, cancel := context.WithCancel(context.Background())
	held := make(chan error, 1)
	go func() { held <- g.hold(hctx) }()
	for { // until the hold waits
		g.mu.Lock()
		sole := g.sole
		g.mu.Unlock()
		if sole {
			break
		}
		time.Sleep(time.Millisecond)
	}
	sctx, scancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer scancel()
	if err := g.share(sctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("share while a delete waits: %v, want to wait", err)
	}
	cancel()
	if err := <-held; !errors.Is(err, context.Canceled) {
		t.Fatalf("abandoned hold: %v", err)
	}
	if err := g.share(context.Background()); err != nil {
		t.Fatalf("share after the hold gave up: %v", err)
	}
	g.unshare()
	g.unshare()
	if err := g.hold(context.Background()); err != nil {
		t.Fatalf("hold of a free gate: %v", err)
	}
	g.release()
}
