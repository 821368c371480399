package vmstate

import (
	"fmt"
	"os"
	"path/filepath"
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
	recs, err := ReadRecords(filepath.Dir(s.Dir("0rder")))
	if err != nil || len(recs) != 1 {
		t.Fatal(recs, err)
	}
	if got := recs[0]; got.Phase != Busy || got.Seq != 3 {
		t.Fatalf("on disk: phase %s seq %d, want busy seq 3", got.Phase, got.Seq)
	}
	// A record read back after a restart goes on from its sequence.
	s.Close()
	s2, err := Open(filepath.Dir(s.Dir("0rder")))
	if err != nil {
		t.Fatal(err)
	}
	if err := s2.Save(&Record{ID: "0rder", Pool: "p", Phase: Idle, Seq: 2}); err != nil {
		t.Fatal(err)
	}
	recs, _ = s2.List()
	if len(recs) != 1 || recs[0].Seq != 3 {
		t.Fatalf("a new store wrote seq 2 over seq 3 on disk")
	}
}

// Every write is synced before it returns: a Create or Save syncs the
// log (and nothing else: no file or directory per record); a Remove
// syncs the state directory (the VM directory's rename) and then the
// log (the record's removal).
func TestEveryWriteSyncsTheLog(t *testing.T) {
	var synced []string
	old := syncFile
	syncFile = func(f *os.File) error { synced = append(synced, filepath.Base(f.Name())); return f.Sync() }
	t.Cleanup(func() { syncFile = old })
	base := t.TempDir()
	s, err := Open(base)
	if err != nil {
		t.Fatal(err)
	}
	synced = nil
	if err := s.Create(&Record{ID: "sync1", Pool: "p"}); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(synced) != "[records.0.log]" {
		t.Fatalf("Create synced %v, want the log once", synced)
	}
	synced = nil
	if err := s.Save(&Record{ID: "sync1", Pool: "p", Phase: Idle}); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(synced) != "[records.0.log]" {
		t.Fatalf("Save synced %v, want the log once", synced)
	}
	synced = nil
	if err := s.Remove("sync1"); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(synced) != fmt.Sprintf("[%s records.0.log]", filepath.Base(base)) {
		t.Fatalf("Remove synced %v, want the state directory then the log", synced)
	}
}
