package vmstate

import (
	"os"
	"path/filepath"
	"testing"
)

// Empty leaves a VM's directory empty and its record, which List still
// reads.
func TestEmptyKeepsOnlyTheRecord(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Create(&Record{ID: "e1", Pool: "p", Phase: Deregistering, RunnerID: "7"}); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(s.Dir("e1"), "initramfs.cpio"), []byte("credential"), 0o600)
	os.MkdirAll(filepath.Join(s.Dir("e1"), "disks", "rw"), 0o700)
	if err := s.Empty("e1"); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(s.Dir("e1"))
	if err != nil || len(entries) != 0 {
		t.Fatalf("directory holds %v (%v), want nothing", entries, err)
	}
	recs, err := s.List()
	if err != nil || len(recs) != 1 || recs[0].Phase != Deregistering || recs[0].RunnerID != "7" {
		t.Fatalf("list after Empty: %+v, %v", recs, err)
	}
}
