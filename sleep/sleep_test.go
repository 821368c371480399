package sleep

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestForWaitsTheDuration(t *testing.T) {
	start := time.Now()
	if err := For(context.Background(), 30*time.Millisecond); err != nil {
		t.Fatalf("For: %v", err)
	}
	if got := time.Since(start); got < 30*time.Millisecond {
		t.Fatalf("For returned after %s, want at least 30ms", got)
	}
}

func TestForEndsWithItsContext(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := For(ctx, time.Hour)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("For with a context that ends: %v, want context.DeadlineExceeded", err)
	}
	if got := time.Since(start); got > 10*time.Second {
		t.Fatalf("For returned after %s: it waited out the duration, not the context", got)
	}
}

func TestForWithAnEndedContextDoesNotWait(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	// A zero duration's timer and an ended context are both ready: the
	// ended context must win every time, so a loop that sleeps 0 between
	// attempts still stops when it is cancelled.
	for i := 0; i < 100; i++ {
		if err := For(ctx, 0); !errors.Is(err, context.Canceled) {
			t.Fatalf("For(ended ctx, 0) = %v on try %d, want context.Canceled", err, i)
		}
	}
}
