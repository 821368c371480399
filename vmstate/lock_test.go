package vmstate

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Two stores on one directory would interleave their log entries: the
// second Open is refused, naming the lock, until the first is closed.
func TestASecondOpenOfOneDirectoryIsRefused(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "vms")
	first, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir); !errors.Is(err, ErrInUse) {
		t.Fatalf("second Open of %s: %v, want ErrInUse", dir, err)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	again, err := Open(dir)
	if err != nil {
		t.Fatalf("Open after the first store closed: %v", err)
	}
	again.Close()
}

// TestALockAChildHoldsForAnInstantIsWaitedFor: a process the previous
// orchestrator forked holds its lock's descriptor until it execs; a
// restart within that instant waits for it (at most lockWait) instead of
// refusing the directory. The child here holds it 300 ms after the
// store that took it let go.
func TestALockAChildHoldsForAnInstantIsWaitedFor(t *testing.T) {
	dir := t.TempDir()
	f, err := lockDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	child := exec.Command("sleep", "0.3")
	child.ExtraFiles = []*os.File{f}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer child.Wait()
	f.Close()
	again, err := lockDir(dir)
	if err != nil {
		t.Fatalf("lock while a child held it for 300 ms: %v", err)
	}
	again.Close()
}
