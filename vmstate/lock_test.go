package vmstate

import (
	"errors"
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
