package daemon

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/config"
	"github.com/nixos-fireactions/nixos-fireactions/forge"
)

// forcedDrain is a drain that uses all its grace: busy VMs were ended.
type forcedDrain struct{}

func (forcedDrain) Drain(ctx context.Context) error {
	<-ctx.Done()
	return ctx.Err()
}

// quiescingDriver records the context its Quiesce was given.
type quiescingDriver struct {
	errAtCall error
	left      time.Duration
}

func (*quiescingDriver) Name() string           { return "gh" }
func (*quiescingDriver) Kind() string           { return "github" }
func (*quiescingDriver) Retain(_ []forge.Forge) {}
func (*quiescingDriver) scope(config.Pool, config.Scope, string) (forge.Forge, error) {
	return nil, errors.New("no scopes")
}

func (d *quiescingDriver) Quiesce(ctx context.Context) error {
	d.errAtCall = ctx.Err()
	if dl, ok := ctx.Deadline(); ok {
		d.left = time.Until(dl)
	}
	return nil
}

// After a forced drain, the drivers still get time of their own to wind
// their listeners down (a scale-set session's DELETE), not the drain's
// expired context.
func TestQuiesceAfterForcedDrainHasItsOwnTime(t *testing.T) {
	d := &quiescingDriver{}
	fs := &forgeSet{drivers: map[string]forgeDriver{"gh": d}}
	err := drainThenQuiesce(forcedDrain{}, fs, 10*time.Millisecond, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("drain error %v, want the forced drain's", err)
	}
	if d.errAtCall != nil {
		t.Fatalf("Quiesce was given a context already done: %v", d.errAtCall)
	}
	if d.left < quiesceTimeout-5*time.Second {
		t.Fatalf("Quiesce had %v, want about %v", d.left, quiesceTimeout)
	}
}
