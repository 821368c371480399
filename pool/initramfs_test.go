package pool

import (
	"bytes"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/vmstate"
)

// filesHolding are the files under dir that hold secret.
func filesHolding(t *testing.T, dir string, secret []byte) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if b, err := os.ReadFile(path); err == nil && bytes.Contains(b, secret) {
			out = append(out, path)
		}
		return nil
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	return out
}

// TestStartedVMKeepsNoInitramfsOnTheHostDisk: a VM's initramfs, which
// holds its runner's credential, is there while its monitor starts (the
// positive control: Start read the credential from it) and gone from the
// state directory once the monitor has started, for the VM's whole life:
// no file there holds the credential while its job runs. A monitor that
// still holds the file (vmm.BootReleaser) is asked once to let it go
// once its guest has reported.
func TestStartedVMKeepsNoInitramfsOnTheHostDisk(t *testing.T) {
	stateDir := filepath.Join(t.TempDir(), "vms")
	h := newHarnessAt(t, stateDir, 0, 1, guestRunsOneJob, nil, slog.New(slog.DiscardHandler), nil, nil)
	h.boot.Lock()
	h.boot.Files = true
	h.boot.Unlock()
	h.hv.jobTime = 2 * time.Second
	h.forge.enqueue("j1")
	eventually(t, 5*time.Second, "the VM busy with its job", func() bool { return h.m.Phases()[vmstate.Busy] == 1 })

	h.hv.mu.Lock()
	spec := h.hv.specs[0]
	atStart := h.hv.initrds[spec.ID]
	h.hv.mu.Unlock()
	rec, err := h.m.VM(spec.ID)
	if err != nil {
		t.Fatal(err)
	}
	cred := []byte("own-credential-" + rec.RunnerID)
	if !bytes.Contains(atStart, cred) {
		t.Fatalf("positive control: the initramfs Start found does not hold the runner's credential %q", cred)
	}
	if _, err := os.Stat(spec.Initramfs); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the running VM's initramfs %s is still on the disk (stat: %v)", spec.Initramfs, err)
	}
	if held := filesHolding(t, stateDir, cred); len(held) != 0 {
		t.Errorf("files in the state directory hold the running VM's runner credential: %v", held)
	}
	h.hv.mu.Lock()
	fm := h.hv.machines[0]
	h.hv.mu.Unlock()
	if n := fm.released.Load(); n != 1 {
		t.Errorf("the machine whose guest reported was asked %d times to release its initramfs, want once", n)
	}
	eventually(t, 10*time.Second, "the job done", func() bool {
		h.hv.mu.Lock()
		defer h.hv.mu.Unlock()
		return h.hv.running == 0
	})
}

// record is VM id's record on disk, nil if none.
func (h *harness) record(id string) *vmstate.Record {
	recs, _ := h.store.List()
	for _, r := range recs {
		if r.ID == id {
			return r
		}
	}
	return nil
}

// TestVMWhoseMonitorFailedToStartKeepsNoInitramfs: a VM whose monitor
// did not start, and whose record and directory stay (its runner's
// removal failed, so it is kept for a later one), keeps no initramfs
// there: nothing will boot it again.
func TestVMWhoseMonitorFailedToStartKeepsNoInitramfs(t *testing.T) {
	stateDir := filepath.Join(t.TempDir(), "vms")
	h := newHarnessAt(t, stateDir, 0, 1, guestNoStart, nil, slog.New(slog.DiscardHandler), nil, nil)
	h.boot.Lock()
	h.boot.Files = true
	h.boot.Unlock()
	h.forge.mu.Lock()
	h.forge.removeErr = errors.New("forge unreachable")
	h.forge.mu.Unlock()
	h.forge.enqueue("j1")
	eventually(t, 5*time.Second, "a VM failed to start", func() bool {
		h.hv.mu.Lock()
		defer h.hv.mu.Unlock()
		return len(h.hv.specs) > 0
	})
	h.hv.mu.Lock()
	spec := h.hv.specs[0]
	atStart := h.hv.initrds[spec.ID]
	h.hv.mu.Unlock()
	var rec *vmstate.Record
	// Failed in the view (the record on disk keeps its last saved phase
	// until deregisterLater saves it as Deregistering: see vm), its
	// record and directory still there while its runner's removal is
	// retried.
	eventually(t, 5*time.Second, "the failed VM's record kept", func() bool {
		v, err := h.m.VM(spec.ID)
		rec = h.record(spec.ID)
		return err == nil && v.Phase == vmstate.Failed && rec != nil
	})
	cred := []byte("own-credential-" + rec.RunnerID)
	if !bytes.Contains(atStart, cred) {
		t.Fatalf("positive control: the initramfs Start found does not hold the runner's credential %q", cred)
	}
	if _, err := os.Stat(spec.Dir); err != nil {
		t.Fatalf("the failed VM's directory, kept for its runner's removal: %v", err)
	}
	if held := filesHolding(t, stateDir, cred); len(held) != 0 {
		t.Errorf("files in the state directory hold the failed VM's runner credential: %v", held)
	}
}
