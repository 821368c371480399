// Package sleep waits out a duration the way every blocking call in the
// orchestrator must: until the time is up or its context ends, whichever
// comes first. It exists because time.Sleep ignores cancellation: a retry
// backoff (the GitHub transport) or a lock poll (the image store's lease)
// that slept with it would hold a drain or a reload up for its whole wait.
package sleep

import (
	"context"
	"time"
)

// For waits d, or until ctx ends; it returns ctx's error if ctx ended
// first (or had already ended) and nil once d has passed.
func For(ctx context.Context, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
