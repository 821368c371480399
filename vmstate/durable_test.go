package vmstate

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// Many goroutines saving one VM's record never trip over each other:
// every save is written, numbered in turn, and the last on disk is whole.
func TestConcurrentSavesOfOneRecord(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Create(&Record{ID: "c0ncur", Pool: "p", Phase: Booting}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 16*50)
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				r := &Record{ID: "c0ncur", Pool: "p", Phase: Busy, Reason: strings.Repeat("x", 2000)}
				if err := s.Save(r); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	n := 0
	for err := range errs {
		if n < 3 {
			t.Error(err)
		}
		n++
	}
	if n > 0 {
		t.Fatalf("%d of %d concurrent saves failed", n, 16*50)
	}
	recs, err := ReadRecords(filepath.Dir(s.Dir("c0ncur")))
	if err != nil || len(recs) != 1 || recs[0].Phase != Busy || recs[0].Seq != 16*50 {
		t.Fatalf("record on disk: %v, %v; want busy, seq %d", len(recs), err, 16*50)
	}
}

// Only directories the store made are listed, so recovery never removes
// anything else under the state directory: a name that is no VM id, a
// directory without a record, a record naming another VM.
func TestListIgnoresDirectoriesItDoesNotOwn(t *testing.T) {
	base := t.TempDir()
	s, err := Open(base)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Create(&Record{ID: "0wned", Pool: "p", Phase: Idle}); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"lost+found", "Not_A_VM", "n0rec0rd", "0ther"} {
		if err := os.Mkdir(filepath.Join(base, d), 0o700); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(base, d, "precious"), []byte("keep"), 0o600)
	}
	// A record in a directory that is not its own VM's.
	os.WriteFile(filepath.Join(base, "0ther", "state.json"), []byte(`{"id":"elsewhere","pool":"p"}`), 0o600)
	list, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, r := range list {
		ids = append(ids, r.ID)
	}
	if fmt.Sprint(ids) != "[0wned]" {
		t.Fatalf("listed %v, want only [0wned]", ids)
	}
}

// A Create a crash cut short leaves only a temporary directory: not
// listed, and removed by RemoveUnfinished (recovery), which leaves the
// rest alone.
func TestRemoveUnfinishedCreates(t *testing.T) {
	base := t.TempDir()
	s, err := Open(base)
	if err != nil {
		t.Fatal(err)
	}
	cut := filepath.Join(base, newDirPrefix+"cut0ff-123456")
	if err := os.Mkdir(cut, 0o700); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(base, ".new-Not_Ours")
	os.Mkdir(other, 0o700)
	if err := s.Create(&Record{ID: "d0ne", Pool: "p"}); err != nil {
		t.Fatal(err)
	}
	list, err := s.List()
	if err != nil || len(list) != 1 || list[0].ID != "d0ne" {
		t.Fatalf("list %v, %v", list, err)
	}
	if err := s.RemoveUnfinished(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(cut); !os.IsNotExist(err) {
		t.Fatal("unfinished Create left")
	}
	for _, keep := range []string{other, s.Dir("d0ne")} {
		if _, err := os.Stat(keep); err != nil {
			t.Errorf("%s removed", keep)
		}
	}
}

// Remove never takes the state directory itself, or anything outside it,
// for a VM's directory.
func TestRemoveRefusesAnInvalidID(t *testing.T) {
	base := filepath.Join(t.TempDir(), "vms")
	s, err := Open(base)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(base, "keep"), nil, 0o600)
	for _, id := range []string{"", ".", "..", "../vms", "a/b"} {
		if err := s.Remove(id); err == nil {
			t.Errorf("Remove(%q) succeeded", id)
		}
	}
	if _, err := os.Stat(filepath.Join(base, "keep")); err != nil {
		t.Fatalf("state directory damaged: %v", err)
	}
}

// A Remove a crash cuts short never leaves a VM directory without its
// record (found by the crash loop, pool's TestCrashLoop: a kill inside
// the deletion left an empty VM directory that no List saw and nothing
// removed): the directory leaves the VM's name first, and what is left
// under its new name is neither listed nor kept past RemoveUnfinished.
// The crash is the store's deletion step stopped right after the rename.
func TestRemoveCutShortLeavesNoRecordlessVMDirectory(t *testing.T) {
	base := t.TempDir()
	s, err := Open(base)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Create(&Record{ID: "g0ne", Pool: "p"}); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(s.Dir("g0ne"), "console.log"), []byte("x"), 0o600)
	if err := s.Remove("g0ne"); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove("g0ne"); err != nil {
		t.Fatalf("removing a removed vm: %v", err)
	}
	if entries := vmEntries(t, base); len(entries) != 0 {
		t.Fatalf("left after Remove: %v", entries)
	}
	// Cut short right after the rename, as a crash would: the deletion
	// starts (the record first) and stops, the rest still in place.
	if err := s.Create(&Record{ID: "g0ne", Pool: "p"}); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(s.Dir("g0ne"), "console.log"), []byte("x"), 0o600)
	var cut string
	s.removeTree = func(path string) error {
		cut = path
		return errors.New("killed")
	}
	if err := s.Remove("g0ne"); err == nil {
		t.Fatal("a Remove cut short reported success")
	}
	if cut == "" {
		t.Fatal("Remove deleted the directory without the store's deletion step")
	}
	if _, err := os.Stat(filepath.Join(cut, "console.log")); err != nil {
		t.Fatalf("control: the deletion cut short took everything: %v", err)
	}
	entries := vmEntries(t, base)
	for _, e := range entries {
		if e == "g0ne" {
			t.Fatalf("a Remove cut short left a directory named as the VM: %v", entries)
		}
	}
	if len(entries) != 1 {
		t.Fatalf("after a Remove cut short: %v, want the one directory it renamed", entries)
	}
	if list, err := s.List(); err != nil || len(list) != 0 {
		t.Fatalf("a removal cut short is listed: %v, %v", list, err)
	}
	// The next start finishes it (the crash released the lock).
	s.lock.Close()
	s2, err := Open(base)
	if err != nil {
		t.Fatal(err)
	}
	if list, err := s2.List(); err != nil || len(list) != 0 {
		t.Fatalf("a removal cut short is listed after a restart: %v, %v", list, err)
	}
	if err := s2.RemoveUnfinished(); err != nil {
		t.Fatal(err)
	}
	if entries := vmEntries(t, base); len(entries) != 0 {
		t.Fatalf("left after RemoveUnfinished: %v", entries)
	}
}

// vmEntries is what dir holds besides the store's log, snapshot and lock.
func vmEntries(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if n := e.Name(); !strings.HasPrefix(n, logPrefix) && n != lockFile {
			out = append(out, n)
		}
	}
	return out
}
