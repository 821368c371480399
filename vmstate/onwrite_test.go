package vmstate

import (
	"path/filepath"
	"slices"
	"testing"
)

// OnWrite sees every record the store writes, Create's and Save's, and
// not a Save skipped as older than the record saved: what the pool's
// count of writes per VM life (issue 22) rests on.
func TestOnWriteSeesEveryRecordWritten(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "vms"))
	if err != nil {
		t.Fatal(err)
	}
	var seen []Phase
	s.OnWrite(func(r *Record) { seen = append(seen, r.Phase) })
	if err := s.Create(&Record{ID: "a1", Phase: Creating, Seq: 1}); err != nil {
		t.Fatal(err)
	}
	if err := s.Save(&Record{ID: "a1", Phase: Booting, Seq: 3}); err != nil {
		t.Fatal(err)
	}
	if err := s.Save(&Record{ID: "a1", Phase: Idle, Seq: 2}); err != nil { // older: skipped
		t.Fatal(err)
	}
	if want := []Phase{Creating, Booting}; !slices.Equal(seen, want) {
		t.Fatalf("OnWrite saw %v, want %v", seen, want)
	}
}
