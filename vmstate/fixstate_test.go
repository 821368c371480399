package vmstate

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// A directory sync that fails after the compaction's snapshot rename
// leaves the generation in doubt: the journal neither rolls back nor
// writes on, so no write is reported durable that a restart loses.
func TestCompactionDirSyncFailureAfterRenameLosesNoWrite(t *testing.T) {
	base := t.TempDir()
	s, err := Open(base)
	if err != nil {
		t.Fatal(err)
	}
	s.j.compactAt = 1500
	calls := 0
	s.j.syncDir = func(dir string) error {
		calls++
		if calls == 2 { // the sync after the rename
			return errors.New("injected dir sync failure")
		}
		return syncDir(dir)
	}
	var durable []string
	for i := 0; i < 40; i++ {
		id := fmt.Sprintf("d%03d", i)
		if err := s.Create(&Record{ID: id, Pool: "p", Phase: Creating}); err == nil {
			durable = append(durable, id)
		}
	}
	if calls < 2 {
		t.Fatal("no compaction ran")
	}
	s.Close()
	s2, err := Open(base)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	recs, _ := s2.List()
	got := map[string]bool{}
	for _, r := range recs {
		got[r.ID] = true
	}
	for _, id := range durable {
		if !got[id] {
			t.Fatalf("%s was reported durable but is lost after a restart (%d of %d kept)", id, len(recs), len(durable))
		}
	}
}

// Open refuses, and removes nothing, when the snapshot's log is missing
// but an older log is there.
func TestOpenRefusesWhenTheSnapshotsLogIsMissing(t *testing.T) {
	base := t.TempDir()
	s, err := Open(base)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Create(&Record{ID: "k1", Pool: "p", Phase: Booting}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if err := writeSynced(filepath.Join(base, snapFile), frame(kindGen, []byte("1"))); err != nil {
		t.Fatal(err)
	}
	_, err = Open(base)
	if err == nil || !strings.Contains(err.Error(), logName(0)) {
		t.Fatalf("Open: %v, want a refusal naming %s", err, logName(0))
	}
	if _, err := os.Stat(filepath.Join(base, logName(0))); err != nil {
		t.Fatalf("the older log is gone: %v", err)
	}
}

// One corrupt byte in the middle of the log fails Open, naming the file
// and offset, and cuts nothing; a torn last entry is cut as before.
// ReadRecords, first, reads by the same rule without writing: it refuses
// the corrupt middle alike and leaves the torn entry out, the log as it
// was.
func TestOpenRefusesACorruptMiddleAndCutsATornEnd(t *testing.T) {
	for _, c := range []struct {
		name    string
		damage  func(b []byte, offs []int) []byte
		refuse  bool
		records int
	}{
		{"a byte flipped in entry 1 of 10", func(b []byte, offs []int) []byte { b[offs[1]+headerLen+3] ^= 0x40; return b }, true, 0},
		{"the last entry torn", func(b []byte, offs []int) []byte { return b[:offs[9]+headerLen+5] }, false, 9},
	} {
		t.Run(c.name, func(t *testing.T) {
			base := t.TempDir()
			s, err := Open(base)
			if err != nil {
				t.Fatal(err)
			}
			var offs []int
			for i := 0; i < 10; i++ {
				offs = append(offs, int(s.j.size))
				if err := s.Create(&Record{ID: fmt.Sprintf("m%02d", i), Pool: "p", Phase: Booting}); err != nil {
					t.Fatal(err)
				}
			}
			s.Close()
			path := filepath.Join(base, logName(0))
			b, _ := os.ReadFile(path)
			b = c.damage(b, offs)
			os.WriteFile(path, b, 0o600)
			recs, rerr := ReadRecords(base)
			if after, _ := os.ReadFile(path); !bytes.Equal(after, b) {
				t.Fatalf("ReadRecords changed the log: %d bytes, were %d", len(after), len(b))
			}
			if c.refuse && (rerr == nil || !strings.Contains(rerr.Error(), path) || !strings.Contains(rerr.Error(), fmt.Sprint(offs[1]))) {
				t.Fatalf("ReadRecords: %d records, %v; want a refusal naming %s and offset %d, as Open's", len(recs), rerr, path, offs[1])
			}
			if !c.refuse && (rerr != nil || len(recs) != c.records) {
				t.Fatalf("ReadRecords: %d records, %v; want %d", len(recs), rerr, c.records)
			}
			s2, err := Open(base)
			if c.refuse {
				if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), fmt.Sprint(offs[1])) {
					t.Fatalf("Open: %v, want a refusal naming %s and offset %d", err, path, offs[1])
				}
				if after, _ := os.ReadFile(path); len(after) != len(b) {
					t.Fatalf("the log was cut to %d bytes of %d", len(after), len(b))
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer s2.Close()
			if recs, _ := s2.List(); len(recs) != c.records {
				t.Fatalf("%d records, want %d", len(recs), c.records)
			}
		})
	}
}

// Close waits for a commit under way: the commit ends on an open log
// (its writer told it is durable), and only then is the log closed.
func TestCloseWaitsForACommitUnderWay(t *testing.T) {
	base := t.TempDir()
	s, err := Open(base)
	if err != nil {
		t.Fatal(err)
	}
	held, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	old := syncFile
	syncFile = func(f *os.File) error {
		if strings.HasSuffix(f.Name(), logSuffix) {
			once.Do(func() { close(held); <-release })
		}
		return f.Sync()
	}
	t.Cleanup(func() { syncFile = old })
	created := make(chan error, 1)
	go func() { created <- s.Create(&Record{ID: "w1", Pool: "p", Phase: Booting}) }()
	<-held
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	select {
	case err := <-closed:
		close(release)
		t.Fatalf("Close returned (%v) while a commit was under way", err)
	case <-time.After(200 * time.Millisecond):
	}
	close(release)
	if err := <-created; err != nil {
		t.Fatalf("the commit under Close: %v", err)
	}
	if err := <-closed; err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Save(&Record{ID: "w1", Pool: "p", Phase: Idle}); err == nil {
		t.Fatal("a write after Close succeeded")
	}
}

// Late calls for ids without a record (a Save or Empty of a VM removed,
// a Create that fails) leave no lock behind: the store's map stays the
// size of its records.
func TestLateCallsForGoneVMsLeaveNoLockBehind(t *testing.T) {
	base := t.TempDir()
	s, err := Open(base)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Create(&Record{ID: "live", Pool: "p", Phase: Booting}); err != nil {
		t.Fatal(err)
	}
	os.Mkdir(filepath.Join(base, "clash"), 0o700) // a Create of it fails
	size := func() int { s.mu.Lock(); defer s.mu.Unlock(); return len(s.recs) }
	before := size()
	for i := 0; i < 200; i++ {
		id := fmt.Sprintf("gone%03d", i)
		if err := s.Create(&Record{ID: id, Pool: "p", Phase: Booting}); err != nil {
			t.Fatal(err)
		}
		if err := s.Remove(id); err != nil {
			t.Fatal(err)
		}
		s.Save(&Record{ID: id, Pool: "p", Phase: Done})
		s.Empty(id)
		s.Remove(id)
		s.Create(&Record{ID: "clash", Pool: "p"})
	}
	if after := size(); after != before {
		t.Fatalf("%d record locks after 200 late calls, want %d", after, before)
	}
	if err := s.Save(&Record{ID: "live", Pool: "p", Phase: Idle}); err != nil {
		t.Fatal(err)
	}
}

// Removed VMs' records (their runner credentials) leave the log once
// their bytes pass the bound, long before the log's 4 MiB: a
// compaction drops them.
func TestRemovedRecordsCredentialsLeaveTheLog(t *testing.T) {
	base := t.TempDir()
	s, err := Open(base)
	if err != nil {
		t.Fatal(err)
	}
	s.j.deadAt = 4 << 10
	const secret = "runner-secret-0123456789"
	for i := 0; i < 20; i++ {
		id := fmt.Sprintf("r%03d", i)
		if err := s.Create(&Record{ID: id, Pool: "p", Phase: Booting, RunnerMemo: secret, AgentToken: secret}); err != nil {
			t.Fatal(err)
		}
		if err := s.Remove(id); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Create(&Record{ID: "live", Pool: "p", Phase: Booting}); err != nil {
		t.Fatal(err)
	}
	s.j.mu.Lock()
	gen, size := s.j.gen, s.j.size
	s.j.mu.Unlock()
	if gen == 0 || size > 4<<10 {
		t.Fatalf("generation %d, log of %d bytes: removed records were not compacted away", gen, size)
	}
	if b, _ := os.ReadFile(filepath.Join(base, snapFile)); strings.Contains(string(b), secret) {
		t.Fatal("the snapshot holds a removed VM's credential")
	}
	if b, _ := os.ReadFile(filepath.Join(base, logName(gen))); strings.Count(string(b), secret) >= 2*20 {
		t.Fatal("the log holds every removed VM's credential")
	}
	if recs, _ := s.List(); len(recs) != 1 || recs[0].ID != "live" {
		t.Fatalf("records: %v", recs)
	}
	// Open counts the removed VMs' bytes of the log as the writes did.
	s.j.mu.Lock()
	dead := s.j.dead
	s.j.mu.Unlock()
	if dead == 0 { // compacted on the last removal: one more, well under the bound
		s.Create(&Record{ID: "tail", Pool: "p"})
		s.Remove("tail")
		s.j.mu.Lock()
		dead = s.j.dead
		s.j.mu.Unlock()
	}
	s.Close()
	s2, err := Open(base)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if s2.j.dead != dead || dead == 0 {
		t.Fatalf("after Open %d bytes of removed records, want %d (not 0)", s2.j.dead, dead)
	}
}
