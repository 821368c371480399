package vmstate

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Two goroutines take snapshots of one record, seq 2 after seq 1, and save
// them in the other order: the older never replaces the newer on disk.
func TestSaveNeverWritesAnOlderRecordOverANewer(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Create(&Record{ID: "0rder", Pool: "p", Phase: Booting, Seq: 1}); err != nil {
		t.Fatal(err)
	}
	newer := &Record{ID: "0rder", Pool: "p", Phase: Busy, Seq: 3}
	older := &Record{ID: "0rder", Pool: "p", Phase: Idle, Seq: 2}
	if err := s.Save(newer); err != nil {
		t.Fatal(err)
	}
	if err := s.Save(older); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(s.Dir("0rder"), "state.json"))
	if err != nil {
		t.Fatal(err)
	}
	var got Record
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if got.Phase != Busy || got.Seq != 3 {
		t.Fatalf("on disk: phase %s seq %d, want busy seq 3", got.Phase, got.Seq)
	}
	// A record read back after a restart goes on from its sequence.
	s2, _ := Open(filepath.Dir(s.Dir("0rder")))
	if err := s2.Save(&Record{ID: "0rder", Pool: "p", Phase: Idle, Seq: 2}); err != nil {
		t.Fatal(err)
	}
	b, _ = os.ReadFile(filepath.Join(s.Dir("0rder"), "state.json"))
	json.Unmarshal(b, &got)
	if got.Seq != 3 {
		t.Fatalf("a new store wrote seq 2 over seq 3 on disk")
	}
}

// Every write is synced: the record file, then the directory holding its
// name; Create syncs the state directory too.
func TestSaveSyncsFileAndDirectory(t *testing.T) {
	var synced []string
	old := syncFile
	syncFile = func(f *os.File) error { synced = append(synced, filepath.Base(f.Name())); return f.Sync() }
	t.Cleanup(func() { syncFile = old })
	base := t.TempDir()
	s, err := Open(base)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Create(&Record{ID: "sync1", Pool: "p"}); err != nil {
		t.Fatal(err)
	}
	// The record, the new directory holding its name (a temporary one,
	// renamed into place after), then the state directory holding the
	// VM directory's name.
	if len(synced) != 3 || synced[0] != "state.json" || !strings.HasPrefix(synced[1], newDirPrefix+"sync1-") || synced[2] != filepath.Base(base) {
		t.Fatalf("Create synced %v, want the record, its new directory, then the state directory", synced)
	}
	synced = nil
	if err := s.Save(&Record{ID: "sync1", Pool: "p", Phase: Idle}); err != nil {
		t.Fatal(err)
	}
	if len(synced) != 2 || synced[1] != "sync1" {
		t.Fatalf("Save synced %v, want the temporary record file then the VM directory", synced)
	}
}
