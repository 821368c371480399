package pool

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/internal/hosttest"
	"github.com/nixos-fireactions/nixos-fireactions/vmm"
)

// TestATemplateMonitorARestartCannotEndKeepsItsSlot: a template build
// whose monitor's kill failed leaves it running as its slot's user; the
// slot, recorded in the build's directory before the monitor started,
// outlives a restart: when Recover cannot end that monitor (its kill
// fails, or it cannot be looked for), the slot is held, so no VM is
// given it while the old monitor may run as its user.
func TestATemplateMonitorARestartCannotEndKeepsItsSlot(t *testing.T) {
	killFails := func(context.Context, string, int) error { return errors.New("the monitor did not answer its kill") }
	for _, tc := range []struct {
		name   string
		finder func(hv vmm.Hypervisor, id string) vmm.Hypervisor
	}{
		{"its kill fails", func(hv vmm.Hypervisor, id string) vmm.Hypervisor {
			return &finderHV{Hypervisor: hv, pids: map[string]int{id: 4242}}
		}},
		{"it cannot be looked for", func(hv vmm.Hypervisor, _ string) vmm.Hypervisor {
			return failingFinderHV{Hypervisor: hv}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tdir := t.TempDir()
			first := newWarmRig(t, 0, 1, tdir, "", func(d *Deps) {
				d.Hypervisor.(*fakeHV).templateKillFails.Store(true)
			})
			first.waitBuildsEnded(t, 1) // failed: its VM is not known gone
			id := first.m.templateID("p")
			slot := 0
			first.hv.mu.Lock()
			for _, s := range first.hv.specs {
				if s.ID == id {
					slot = s.Slot
				}
			}
			first.hv.mu.Unlock()
			if slot <= 0 {
				t.Fatal("no template VM started in a slot")
			}
			first.stop() // a crash: nothing but what is on disk goes on
			<-first.done

			again := newWarmRig(t, 0, 1, tdir, "")
			again.waitBuildsEnded(t, 1)
			again.stop()
			<-again.done
			again.m.d.Hypervisor = tc.finder(again.hv, id)
			if err := again.m.Recover(context.Background(), Leftovers{KillVM: killFails}); err == nil {
				t.Error("Recover said nothing of a template monitor it could not end")
			}
			addr := netip.AddrFrom4([4]byte{10, 200, 0, byte(slot)})
			if err := again.alloc.Reserve(addr, "probe"); err == nil {
				t.Errorf("slot %d of a template monitor that may still run is free after a restart", slot)
			}
		})
	}
}

// TestARemovedPoolsTemplateMonitorKeepsItsSlotUntilEnded: the directory
// of a pool removed while the daemon was down outlives New while a build
// in it records a slot (its template VM not known gone); Recover holds
// that slot while the monitor cannot be ended, and once it is ended
// drops the record, so the next start removes the directory.
func TestARemovedPoolsTemplateMonitorKeepsItsSlotUntilEnded(t *testing.T) {
	for _, ended := range []bool{false, true} {
		t.Run(map[bool]string{false: "its kill fails", true: "it is ended"}[ended], func(t *testing.T) {
			tdir := t.TempDir()
			build := filepath.Join(tdir, "gone", "1")
			if err := os.MkdirAll(build, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := recordTemplateSlot(build, netip.MustParseAddr("10.200.0.5")); err != nil {
				t.Fatal(err)
			}
			h := newHarnessDeps(t, time.Hour, t.TempDir(), 0, 1, guestRunsOneJob, nil, slog.New(slog.NewTextHandler(io.Discard, nil)), nil, nil,
				func(d *Deps) { d.TemplateDir = tdir })
			h.stop()
			<-h.done
			if !holdsTemplateSlot(build) {
				t.Fatal("New removed the slot record of a template VM not known gone")
			}
			id := h.m.templateID("gone")
			h.m.d.Hypervisor = &finderHV{Hypervisor: h.hv, pids: map[string]int{id: 4343}}
			_ = h.m.Recover(context.Background(), Leftovers{KillVM: func(context.Context, string, int) error {
				if ended {
					return nil
				}
				return errors.New("the monitor did not answer its kill")
			}})
			addr := netip.MustParseAddr("10.200.0.5")
			err := h.alloc.Reserve(addr, "probe")
			if !ended && err == nil {
				t.Error("the recorded slot 5 of a template monitor that may still run is free")
			}
			if ended && (err != nil || holdsTemplateSlot(build)) {
				t.Errorf("an ended template's slot: probe %v, record kept %v; want free and dropped", err, holdsTemplateSlot(build))
			}
		})
	}
}

// recoverWithSlotRecord writes record as the slot record of a build of a
// pool removed while the daemon was down, and runs Recover with that
// pool's template monitor found and its kill failing: the slot records
// are read to be held. It returns the record's path and the log.
func recoverWithSlotRecord(t *testing.T, record string) (string, *hosttest.SyncBuffer) {
	t.Helper()
	tdir := t.TempDir()
	build := filepath.Join(tdir, "gone", "1")
	if err := os.MkdirAll(build, 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(build, templateSlotFile)
	if err := os.WriteFile(path, []byte(record), 0o600); err != nil {
		t.Fatal(err)
	}
	logs := &hosttest.SyncBuffer{}
	h := newHarnessDeps(t, time.Hour, t.TempDir(), 0, 1, guestRunsOneJob, nil, slog.New(slog.NewTextHandler(logs, nil)), nil, nil,
		func(d *Deps) { d.TemplateDir = tdir })
	h.stop()
	<-h.done
	h.m.d.Hypervisor = &finderHV{Hypervisor: h.hv, pids: map[string]int{h.m.templateID("gone"): 4444}}
	_ = h.m.Recover(context.Background(), Leftovers{KillVM: func(context.Context, string, int) error {
		return errors.New("the monitor did not answer its kill")
	}})
	return path, logs
}

// TestASlotRecordOfThePreviousFormatIsRemovedAndSaidSo: the version
// before recorded a template's slot as a number; such a record is
// removed with a warning naming it, not held nor kept forever.
func TestASlotRecordOfThePreviousFormatIsRemovedAndSaidSo(t *testing.T) {
	path, logs := recoverWithSlotRecord(t, "5\n")
	if _, err := os.Lstat(path); err == nil {
		t.Error("a slot record of the previous format is still there")
	}
	if !strings.Contains(logs.String(), "previous format") || !strings.Contains(logs.String(), path) {
		t.Errorf("the removal of a slot record of the previous format not logged with its path:\n%s", logs)
	}
}

// TestASlotRecordThatDoesNotParseIsRemovedAndSaidSo: a slot record that
// holds no address (a torn write, a hand edit) stands for no slot that
// can be held, and its build is kept while it is there; reading the
// records (Recover's hold or drop, New's sweep) removes it with a warning
// naming it and the parse error, instead of failing on it every start.
func TestASlotRecordThatDoesNotParseIsRemovedAndSaidSo(t *testing.T) {
	dir := t.TempDir()
	build := filepath.Join(dir, "1")
	if err := os.MkdirAll(build, 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(build, templateSlotFile)
	if err := os.WriteFile(path, []byte("10.200.0.\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	logs := &hosttest.SyncBuffer{}
	m := &Manager{log: slog.New(slog.NewTextHandler(logs, nil))}
	slots, err := m.recordedTemplateSlots(dir)
	if len(slots) != 0 || err != nil {
		t.Errorf("records read = %v, %v; want none, no error", slots, err)
	}
	if holdsTemplateSlot(build) {
		t.Error("a slot record that does not parse is still there")
	}
	if l := logs.String(); !strings.Contains(l, path) || !strings.Contains(l, "ParseAddr") {
		t.Errorf("the removal of a slot record that does not parse not logged with its path and error:\n%s", l)
	}
}

// TestATemplateSlotIsHeldWhileNothingCanProveItsMonitorGone: without a
// monitor finder (a VMM that cannot look a template's monitor up; QEMU
// and Firecracker both can) nothing proves the monitor of a recorded
// template slot gone, and without a kill a found one cannot be ended:
// the slot is held from every VM and its record kept. A finder that
// finds none proves it gone: the record goes and the slot is free.
func TestATemplateSlotIsHeldWhileNothingCanProveItsMonitorGone(t *testing.T) {
	for _, tc := range []struct {
		name string
		hv   func(hv vmm.Hypervisor, id string) vmm.Hypervisor
		held bool
	}{
		{"no finder", func(hv vmm.Hypervisor, _ string) vmm.Hypervisor { return hv }, true},
		{"its monitor found, no kill", func(hv vmm.Hypervisor, id string) vmm.Hypervisor {
			return &finderHV{Hypervisor: hv, pids: map[string]int{id: 4545}}
		}, true},
		{"no monitor found", func(hv vmm.Hypervisor, _ string) vmm.Hypervisor {
			return &finderHV{Hypervisor: hv}
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tdir := t.TempDir()
			build := filepath.Join(tdir, "gone", "1")
			if err := os.MkdirAll(build, 0o700); err != nil {
				t.Fatal(err)
			}
			addr := netip.MustParseAddr("10.200.0.5")
			if err := recordTemplateSlot(build, addr); err != nil {
				t.Fatal(err)
			}
			h := newHarnessDeps(t, time.Hour, t.TempDir(), 0, 1, guestRunsOneJob, nil, slog.New(slog.NewTextHandler(io.Discard, nil)), nil, nil,
				func(d *Deps) { d.TemplateDir = tdir })
			h.stop()
			<-h.done
			if _, ok := vmm.Hypervisor(h.hv).(vmm.Finder); ok {
				t.Fatal("the fake VMM has a finder: the no-finder case is not tested")
			}
			h.m.d.Hypervisor = tc.hv(h.hv, h.m.templateID("gone"))
			_ = h.m.Recover(context.Background(), Leftovers{})
			err := h.alloc.Reserve(addr, "probe")
			if held := err != nil; held != tc.held {
				t.Errorf("slot %s held %v; want %v", addr, held, tc.held)
			}
			if holdsTemplateSlot(build) != tc.held {
				t.Errorf("slot record kept %v; want %v", holdsTemplateSlot(build), tc.held)
			}
		})
	}
}
