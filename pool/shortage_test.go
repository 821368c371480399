package pool

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/config"
	"github.com/nixos-fireactions/nixos-fireactions/internal/hosttest"
	"github.com/nixos-fireactions/nixos-fireactions/netplan"
	"github.com/nixos-fireactions/nixos-fireactions/vmstate"
)

func TestShortagesAreToldApartFromOtherFailures(t *testing.T) {
	for _, c := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("write initramfs: %w", &os.PathError{Op: "write", Path: "/s/vms/a/initramfs.cpio", Err: syscall.ENOSPC}), ShortDisk},
		{fail(ReasonSetup, &os.PathError{Op: "write", Path: "x", Err: syscall.EDQUOT}), ShortDisk},
		{fmt.Errorf("start: %w", syscall.ENOMEM), ShortMemory},
		{fail(ReasonSetup, fmt.Errorf("allocate address: %w", fmt.Errorf("%w in 10.0.0.0/30", netplan.ErrNoAddress))), ShortAddresses},
		{fail(ReasonCrashed, errors.New("guest powered off before its runner exited")), ""},
		{fail(ReasonRegister, errors.New("no space left on device")), ""}, // a forge's words are not the host's errno
		{nil, ""},
	} {
		if got := shortageOf(c.err); got != c.want {
			t.Errorf("shortageOf(%v) = %q, want %q", c.err, got, c.want)
		}
	}
}

// TestFullStateDiskRunsEveryJobOneAtATimeWithoutBackingOff: with room for
// one VM and a burst of jobs, the pool starts one VM at a time, the next
// as soon as the one before is gone, and says why; it never backs off.
func TestFullStateDiskRunsEveryJobOneAtATimeWithoutBackingOff(t *testing.T) {
	var logs hosttest.SyncBuffer
	h := newHarnessLogging(t, 0, 2, guestRunsOneJob, func(pc *config.Pool) { pc.Timeouts.Boot = time.Minute },
		slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	// Room for one VM's boot files: they take the room until the VM's
	// directory is removed.
	var mu sync.Mutex
	var written []string
	h.boot.Lock()
	h.boot.Full = func(dst string) bool {
		mu.Lock()
		defer mu.Unlock()
		var held []string
		for _, w := range written {
			if _, err := os.Stat(filepath.Dir(w)); err == nil {
				held = append(held, w)
			}
		}
		written = held
		if len(held) >= 1 {
			return true
		}
		written = append(written, dst)
		return false
	}
	h.boot.Unlock()
	h.forge.enqueue("j1", "j2", "j3", "j4")
	eventually(t, 20*time.Second, "4 jobs finished", func() bool {
		h.forge.mu.Lock()
		defer h.forge.mu.Unlock()
		return len(h.forge.finished) == 4
	})
	text := logs.String()
	if strings.Contains(text, "pool backing off") {
		t.Errorf("a full disk backed the pool off:\n%s", grepLines(text, "backing off"))
	}
	if !strings.Contains(text, `level=WARN msg="host resource exhausted: starting one vm at a time until one boots" pool=p cause=disk`) {
		t.Errorf("the log does not say why one VM runs at a time:\n%s", grepLines(text, "level=WARN"))
	}
	if err := h.drain(t, time.Second); err != nil {
		t.Fatal(err)
	}
	h.assertNothingLeft(t)
}

func grepLines(text, s string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// bootObserver counts the VMs that booted.
type bootObserver struct {
	nopObserver
	mu sync.Mutex
	n  int
}

func (o *bootObserver) Booted(string, time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.n++
}

func (o *bootObserver) booted() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.n
}

// TestAfterAShortageVMsStartOneMoreAtATimeWithEachThatBoots: with room
// for one VM and a burst of six jobs, a VM that boots after a shortage
// does not lift the limit at once: one more VM may start with each that
// boots, so while the host has room for one, no more than two VMs are
// ever starting together, not the five the burst asks for (each VM that
// fails registers and removes a runner at the forge).
func TestAfterAShortageVMsStartOneMoreAtATimeWithEachThatBoots(t *testing.T) {
	obs := &bootObserver{}
	h := newHarnessAt(t, filepath.Join(t.TempDir(), "vms"), 0, 6, guestRunsOneJob,
		func(pc *config.Pool) { pc.Timeouts.Boot = time.Minute }, slog.New(slog.NewTextHandler(io.Discard, nil)), obs, nil)
	h.hv.jobTime = 100 * time.Millisecond
	var mu sync.Mutex
	var written []string
	// Most VMs starting at a refusal once a second VM booted: the first
	// pass's burst (no shortage known yet) is long over by then.
	together := 0
	refusals := 0
	h.boot.Lock()
	h.boot.Full = func(dst string) bool {
		mu.Lock()
		defer mu.Unlock()
		var held []string
		for _, w := range written {
			if _, err := os.Stat(filepath.Dir(w)); err == nil {
				held = append(held, w)
			}
		}
		written = held
		if len(held) >= 1 {
			if obs.booted() >= 2 {
				ph := h.m.Phases()
				together = max(together, ph[vmstate.Creating]+ph[vmstate.Booting])
				refusals++
			}
			return true
		}
		written = append(written, dst)
		return false
	}
	h.boot.Unlock()
	h.forge.enqueue("j1", "j2", "j3", "j4", "j5", "j6")
	eventually(t, 30*time.Second, "6 jobs finished", func() bool {
		h.forge.mu.Lock()
		defer h.forge.mu.Unlock()
		return len(h.forge.finished) == 6
	})
	mu.Lock()
	defer mu.Unlock()
	if refusals == 0 {
		t.Fatal("control: no VM was refused room after the second booted")
	}
	if together > 2 {
		t.Errorf("%d VMs were starting together while the host had room for one, want at most 2", together)
	}
}
