package firecracker

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/internal/hosttest"
	"github.com/nixos-fireactions/nixos-fireactions/vmm"
)

// TestHungVMMFailsStart: a VMM that never answers an API call fails
// Start once the call's bound has passed, instead of holding the VM in
// Creating (and a drain behind it) for ever; the VMM is killed and
// nothing of it is left. Each call of the start is hung in turn.
func TestHungVMMFailsStart(t *testing.T) {
	hosttest.RequireRoot(t, "the double checks the TAP exists; creating one needs root")
	b := buildDouble(t)
	for _, hung := range []string{"PUT /machine-config", "PUT /actions"} {
		t.Run(hung, func(t *testing.T) {
			spec, record := doubleSpec(t, []byte("i"))
			t.Setenv("FCDOUBLE_HANG", hung)
			killLeftVMMs(t, spec.ID)
			d := &Driver{Binary: b.Firecracker, CallTimeout: 300 * time.Millisecond}

			type result struct {
				m   vmm.Machine
				err error
			}
			done := make(chan result, 1)
			go func() {
				m, err := d.Start(context.Background(), spec)
				done <- result{m, err}
			}()
			var r result
			select {
			case r = <-done:
			case <-time.After(time.Minute):
				t.Fatalf("Start still blocked on the hung VMM's %s after a minute", hung)
			}
			if r.err == nil {
				_ = r.m.Kill(context.Background())
				t.Fatalf("Start succeeded though the VMM never answered %s", hung)
			}
			if !errors.Is(r.err, ErrNoAnswer) || !strings.Contains(r.err.Error(), hung) {
				t.Errorf("Start = %v, want ErrNoAnswer naming %s", r.err, hung)
			}
			waitFor(t, 5*time.Second, "the hung VMM to be gone", func() bool { return processGone(spec.ID) })
			recs := readRecord(t, record)
			if last := recs[len(recs)-1]; last.Method+" "+last.Path != hung || last.Status != 0 {
				t.Errorf("the last request the double got is %+v, want the hung %s unanswered", last, hung)
			}
		})
	}
}
