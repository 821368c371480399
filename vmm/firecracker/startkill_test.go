package firecracker

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/internal/hosttest"
	"github.com/nixos-fireactions/nixos-fireactions/vmm"
	"github.com/nixos-fireactions/nixos-fireactions/vmm/process"
)

// errDidNotDie is the kill failure a test plays: a monitor that did not
// exit in time (e.g. stuck in the kernel).
var errDidNotDie = errors.New("firecracker: did not exit")

// TestAFailedStartWhoseKillFailedReturnsItsMonitor: a start the VMM
// refused whose monitor could not be killed returns that monitor with
// the error (see vmm.Hypervisor's Start), not nil: it may still run, as
// the VM's slot's user, so its caller must kill it and keep the slot
// until that succeeds. The error says the kill failed; the initramfs
// (the runner's credential) is emptied; a later Kill of the returned
// machine ends the VMM.
func TestAFailedStartWhoseKillFailedReturnsItsMonitor(t *testing.T) {
	hosttest.RequireRoot(t, "creating a TAP needs root")
	b := buildDouble(t)
	spec := refusedSpec(t)
	killLeftVMMs(t, spec.ID)
	d := &Driver{Binary: b.Firecracker, killStart: func(context.Context, *process.Started) error { return errDidNotDie }}

	m, err := d.Start(context.Background(), spec)
	if err == nil {
		_ = m.Kill(context.Background())
		t.Fatal("Start succeeded though the double refused the kernel")
	}
	if !errors.Is(err, errDidNotDie) || !strings.Contains(err.Error(), "The kernel file cannot be opened") {
		t.Errorf("Start = %v, want the double's fault and the kill's failure", err)
	}
	if m == nil {
		t.Fatal("Start returned no machine though its monitor, not killed, may still run")
	}
	if fi, err := os.Stat(spec.Initramfs); err != nil || fi.Size() != 0 {
		t.Errorf("the initramfs (the runner's credential) beside the VMM that may still run: %v, not emptied", err)
	}
	if !IsOurs(m.PID(), spec.ID) {
		t.Fatalf("the returned machine's pid %d is not VM %s's VMM", m.PID(), spec.ID)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := m.Kill(ctx); err != nil {
		t.Fatalf("Kill of the returned machine: %v", err)
	}
	if !processGone(spec.ID) {
		t.Error("the VMM still runs after the returned machine's Kill")
	}
	if !errors.Is(m.Err(), vmm.ErrKilled) {
		t.Errorf("the returned machine's Err = %v, want vmm.ErrKilled", m.Err())
	}
}
