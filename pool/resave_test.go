package pool

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/config"
	"github.com/nixos-fireactions/nixos-fireactions/internal/hosttest"
	"github.com/nixos-fireactions/nixos-fireactions/vmstate"
)

// mountTmpfs mounts a tmpfs of size (mount's size= option) on a fresh
// directory, unmounted when the test ends. It needs root, as make test
// runs.
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size+",mode=0700", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount a tmpfs (needs root): %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

// fillDisk writes path until the file system has no room left and shows
// that a small write elsewhere on it fails too. The store's log may still
// have room in its last page (tmpfs gives a file whole pages): that is
// used up by records of a filler VM of the store's own, smaller and
// smaller, until not even a small one fits. release gives the room back:
// the file and the filler VM removed.
func fillDisk(t *testing.T, path, probeDir string, store *vmstate.Store) (release func()) {
	t.Helper()
	const filler = "f111e7"
	if err := store.Create(&vmstate.Record{ID: filler, Pool: "filler", Phase: vmstate.Idle}); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("filling the disk: %v", err)
			}
			break
		}
	}
	probe := filepath.Join(probeDir, "probe")
	err = os.WriteFile(probe, []byte("a record's worth"), 0o600)
	os.Remove(probe)
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("control: a write on the filled disk: %v, want ENOSPC", err)
	}
	for size := 8192; size >= 16; size /= 2 {
		for store.Save(&vmstate.Record{ID: filler, Pool: "filler", Phase: vmstate.Idle, Reason: strings.Repeat("x", size)}) == nil {
		}
	}
	return func() {
		t.Helper()
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
		if err := store.Remove(filler); err != nil {
			t.Fatal(err)
		}
	}
}

// diskRecords reads the records on disk, by VM id.
func diskRecords(t *testing.T, s *vmstate.Store) map[string]vmstate.Record {
	t.Helper()
	recs, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]vmstate.Record{}
	for _, r := range recs {
		r.Updated = time.Time{} // set by the write, not part of the view
		out[r.ID] = *r
	}
	return out
}

// Issue 23: the state disk fills during a burst of VMs; VMs that took
// their job meanwhile are busy in the orchestrator's view while their
// records on disk still say idle. Once space is back, one reconcile pass
// saves them again: every record on disk matches Manager.VMs(), without
// a restart. The failure is logged at ERROR once per VM, the recovery at
// INFO once.
func TestRecordsThatFailedToSaveAreSavedAgainWithinOneReconcile(t *testing.T) {
	root := mountTmpfs(t, "256k")
	logs := &hosttest.SyncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	obs := &unsavedObserver{}
	h := newHarnessAt(t, filepath.Join(root, "vms"), 0, 6, guestRunsOneJob,
		func(p *config.Pool) { p.Timeouts.Boot, p.Timeouts.Job = time.Minute, time.Hour }, log, obs, nil)
	h.hv.jobTime = time.Hour // busy until the drain ends them
	h.forge.mu.Lock()
	h.forge.hold = true // runners wait idle until told
	h.forge.mu.Unlock()

	h.forge.enqueue("j1", "j2", "j3")
	eventually(t, 20*time.Second, "3 VMs idle", func() bool { return h.m.Phases()[vmstate.Idle] == 3 })
	var first []string
	for _, r := range h.m.VMs() {
		first = append(first, r.ID)
	}

	// The disk fills; the burst goes on: three more jobs, whose VMs
	// cannot even be created, and the idle three take their jobs.
	release := fillDisk(t, filepath.Join(root, "fill"), filepath.Join(root, "vms"), h.store)
	h.forge.enqueue("j4", "j5", "j6")
	h.forge.mu.Lock()
	h.forge.hold = false
	h.forge.mu.Unlock()
	eventually(t, 20*time.Second, "the first 3 VMs busy", func() bool {
		n := 0
		for _, id := range first {
			if r, err := h.m.VM(id); err == nil && r.Phase == vmstate.Busy {
				n++
			}
		}
		return n == 3
	})
	// A VM turns busy in the view before its save is tried: wait until
	// each busy VM's save has failed (and been marked for saving again).
	eventually(t, 20*time.Second, "the busy VMs' saves failed", func() bool {
		out := logs.String()
		for _, id := range first {
			if countLines(out, "level=ERROR", `msg="save vm state; saving it again each reconcile"`, "vm="+id) == 0 {
				return false
			}
		}
		return true
	})

	// Hold the loop still, with only the three busy VMs left (the
	// burst's VMs failed to be created and are gone).
	h.stop()
	<-h.done
	eventually(t, 20*time.Second, "the burst's VMs gone", func() bool { return len(h.m.VMs()) == 3 })
	if _, err := h.m.SetPaused("p", true); err != nil {
		t.Fatal(err)
	}
	onDisk := diskRecords(t, h.store)
	for _, id := range first {
		if onDisk[id].Phase != vmstate.Idle {
			t.Fatalf("control: vm %s on the full disk is %q, want the lagging %q", id, onDisk[id].Phase, vmstate.Idle)
		}
	}

	// Space comes back; one reconcile pass.
	release()
	// The pass asks each lagging VM's goroutine to save its record (the
	// pass itself writes no file); nothing else asks meanwhile, the loop
	// being held still.
	h.m.reconcile(context.Background())
	eventually(t, 20*time.Second, "the lagging records saved", func() bool {
		out := logs.String()
		for _, id := range first {
			if countLines(out, "level=INFO", `msg="vm state saved again"`, "vm="+id) == 0 {
				return false
			}
		}
		return true
	})

	view := h.m.VMs()
	onDisk = diskRecords(t, h.store)
	if len(onDisk) != len(view) {
		t.Errorf("%d records on disk, %d VMs in the view", len(onDisk), len(view))
	}
	for _, v := range view {
		v.Updated = time.Time{}
		if d, ok := onDisk[v.ID]; !ok {
			t.Errorf("vm %s: no record on disk", v.ID)
		} else if !reflect.DeepEqual(d, v) {
			t.Errorf("vm %s: on disk %+v\nin the view %+v", v.ID, d, v)
		}
	}

	// The three lagging VMs, and each burst VM whose creation failed on
	// the full disk, were told once each: no more than one per VM.
	failedToCreate := len(logLines(logs.String(), `msg="vm gone"`))
	if n := obs.count(); n < 3 || n > 3+failedToCreate {
		t.Errorf("observer told of %d unsaved records, want 3 (the busy VMs) to %d (also each VM that failed on the full disk)", n, 3+failedToCreate)
	}

	out := logs.String()
	for _, id := range first {
		if n := countLines(out, "level=ERROR", `msg="save vm state; saving it again each reconcile"`, "vm="+id); n != 1 {
			t.Errorf("vm %s: the failed save logged at ERROR %d times, want once", id, n)
		}
		if n := countLines(out, "level=INFO", `msg="vm state saved again"`, "vm="+id); n != 1 {
			t.Errorf("vm %s: the save once space was back logged at INFO %d times, want once", id, n)
		}
	}
}

// unsavedObserver counts RecordUnsaved events.
type unsavedObserver struct {
	nopObserver
	mu sync.Mutex
	n  int
}

func (o *unsavedObserver) RecordUnsaved(string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.n++
}

func (o *unsavedObserver) count() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.n
}

func logLines(log, part string) []string {
	var out []string
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, part) {
			out = append(out, l)
		}
	}
	return out
}

// countLines counts the log lines holding every one of parts.
func countLines(log string, parts ...string) int {
	n := 0
	for _, line := range strings.Split(log, "\n") {
		all := true
		for _, p := range parts {
			if !strings.Contains(line, p) {
				all = false
				break
			}
		}
		if all {
			n++
		}
	}
	return n
}
