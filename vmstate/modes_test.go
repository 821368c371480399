package vmstate

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// Issue 24: a record may hold a runner's own credential (its memo, see
// Record.RunnerMemo): after Create and after every Save, the record file
// is 0600 and its VM's directory and the state directory 0700, all the
// writer's, and the memo reads back as written.
func TestARecordHoldingARunnersMemoIsItsOwnersOnly(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "vms")
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	const memo = `{"uuid":"u-1","token":"RUNNER-OWN-TOKEN-1"}`
	r := &Record{ID: "a1", Pool: "p", Phase: Creating}
	if err := s.Create(r); err != nil {
		t.Fatal(err)
	}
	check := func(when string) {
		t.Helper()
		for path, want := range map[string]os.FileMode{
			dir:          0o700 | os.ModeDir,
			s.Dir("a1"):  0o700 | os.ModeDir,
			s.j.f.Name(): 0o600,
		} {
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode() != want {
				t.Errorf("%s: %s: mode %v, want %v", when, path, fi.Mode(), want)
			}
			if st, ok := fi.Sys().(*syscall.Stat_t); !ok || int(st.Uid) != os.Geteuid() {
				t.Errorf("%s: %s: not the writer's (uid %d)", when, path, os.Geteuid())
			}
		}
	}
	check("created")
	r.Phase, r.RunnerID, r.RunnerMemo, r.Seq = Booting, "1", memo, 0
	if err := s.Save(r); err != nil {
		t.Fatal(err)
	}
	check("saved with the memo")
	b, err := os.ReadFile(s.j.f.Name())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "RUNNER-OWN-TOKEN-1") {
		t.Fatal("control: the file does not hold the memo; its mode proves nothing")
	}
	recs, err := s.List()
	if err != nil || len(recs) != 1 || recs[0].RunnerMemo != memo {
		t.Fatalf("read back: %+v, %v; want the memo as written", recs, err)
	}
}
