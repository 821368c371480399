package pool

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/vmstate"
)

// unkillable is the monitor of a start that failed and whose kill failed
// too (see vmm.Hypervisor's Start): it may still run, and no Kill ends it.
type unkillable struct{}

// unkillablePID is the PID an unkillable monitor runs as.
const unkillablePID = 4242

func (m *unkillable) PID() int              { return unkillablePID }
func (m *unkillable) Done() <-chan struct{} { return nil } // never
func (m *unkillable) Err() error            { return nil }
func (m *unkillable) Kill(context.Context) error {
	return fmt.Errorf("pid %d did not exit: %w", unkillablePID, context.DeadlineExceeded)
}

// TestAFailedStartWhoseKillFailedKeepsItsSlotAndRecord: a VM whose
// monitor failed to start and could not be killed (Start returned it with
// its error) may still run as its slot's user. Its teardown tries the
// kill again, and when that fails too it keeps the slot (its address)
// and saves its record, Failed with the monitor's PID, for the next
// start's Recover, as for any VM whose kill failed.
func TestAFailedStartWhoseKillFailedKeepsItsSlotAndRecord(t *testing.T) {
	obs := &reasonObserver{}
	h := newHarnessAt(t, filepath.Join(t.TempDir(), "vms"), 0, 1, guestNoStartNorKill, nil,
		slog.New(slog.NewTextHandler(io.Discard, nil)), obs, nil)
	h.forge.enqueue("j1")
	eventually(t, 5*time.Second, "a VM failed to start", func() bool { return len(obs.reasons()) > 0 })
	if got := obs.reasons()[0]; got != ReasonStart {
		t.Fatalf("the VM failed for %q, want %q", got, ReasonStart)
	}
	h.hv.mu.Lock()
	spec := h.hv.specs[0]
	h.hv.mu.Unlock()
	addr := netip.AddrFrom4([4]byte{10, 200, 0, byte(spec.Slot)})
	if err := h.alloc.Reserve(addr, "probe"); err == nil {
		t.Errorf("the slot %d (%s) of a VM whose monitor was not killed was given back", spec.Slot, addr)
	}
	rec := h.record(spec.ID)
	switch {
	case rec == nil:
		t.Fatalf("the record of VM %s, whose monitor may still run, is gone", spec.ID)
	case rec.Phase != vmstate.Failed || rec.PID != unkillablePID || rec.Address != addr.String():
		t.Errorf("the kept record is %s, pid %d, address %s; want %s, pid %d, address %s",
			rec.Phase, rec.PID, rec.Address, vmstate.Failed, unkillablePID, addr)
	}
}
