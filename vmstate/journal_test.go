package vmstate

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// A crash's torn write, or a corrupt entry, at the log's end is cut off
// at the next Open (logged), the records before it kept; writes after
// it are read back too.
func TestOpenCutsATornTail(t *testing.T) {
	for name, tail := range map[string]func(whole []byte) []byte{
		"half a header":      func([]byte) []byte { return []byte{9, 0, 0} },
		"half an entry":      func([]byte) []byte { return frame(kindRecord, []byte(`{"id":"t0rn","pool":"p"}`))[:15] },
		"a checksum wrong":   func([]byte) []byte { e := frame(kindRecord, []byte(`{"id":"t0rn","pool":"p"}`)); e[20] ^= 1; return e },
		"a length past 16 M": func([]byte) []byte { return []byte{0xff, 0xff, 0xff, 0x7f, 1, 2, 3, 4, 'r'} },
	} {
		t.Run(name, func(t *testing.T) {
			base := t.TempDir()
			s, err := Open(base)
			if err != nil {
				t.Fatal(err)
			}
			for _, id := range []string{"k1", "k2"} {
				if err := s.Create(&Record{ID: id, Pool: "p", Phase: Booting}); err != nil {
					t.Fatal(err)
				}
			}
			s.Close()
			path := filepath.Join(base, logName(0))
			whole, _ := os.ReadFile(path)
			f, _ := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
			f.Write(tail(whole))
			f.Close()
			var logged bytes.Buffer
			old := slog.Default()
			slog.SetDefault(slog.New(slog.NewTextHandler(&logged, nil)))
			s2, err := Open(base)
			slog.SetDefault(old)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(logged.String(), "torn or corrupt tail") {
				t.Errorf("the cut was not logged: %q", logged.String())
			}
			if after, _ := os.ReadFile(path); !bytes.Equal(after, whole) {
				t.Fatalf("log after Open: %d bytes, want the %d whole ones", len(after), len(whole))
			}
			if err := s2.Save(&Record{ID: "k2", Pool: "p", Phase: Idle}); err != nil {
				t.Fatal(err)
			}
			s2.Close()
			recs, err := ReadRecords(base)
			if err != nil || len(recs) != 2 || recs[0].ID != "k1" || recs[1].Phase != Idle {
				t.Fatalf("after the cut and a save: %v, %v", recs, err)
			}
		})
	}
}

// powerCut simulates a power loss: each file keeps only what was synced
// of it. The log's bytes written after its last sync are lost.
type powerCut struct {
	mu     sync.Mutex
	synced map[string]int64 // bytes of each file at its last sync
}

func (p *powerCut) install(t *testing.T, skip *atomic.Bool) {
	p.synced = map[string]int64{}
	old := syncFile
	syncFile = func(f *os.File) error {
		if skip != nil && skip.Load() {
			return nil // a sync that does nothing: the break the test must catch
		}
		if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
			p.mu.Lock()
			p.synced[f.Name()] = fi.Size()
			p.mu.Unlock()
		}
		return f.Sync()
	}
	t.Cleanup(func() { syncFile = old })
}

// cut truncates the log to what was synced of it.
func (p *powerCut) cut(t *testing.T, path string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := os.Truncate(path, p.synced[path]); err != nil {
		t.Fatal(err)
	}
}

// Every Create and Save returns only once its entry is synced: a power
// cut right after the calls return (each file cut to what was synced of
// it) loses none of them. With the log's sync left out, the test fails
// (the control below).
func TestAWriteThatReturnedSurvivesAPowerCut(t *testing.T) {
	for _, noSync := range []bool{false, true} {
		t.Run(fmt.Sprintf("sync skipped %v", noSync), func(t *testing.T) {
			var skip atomic.Bool
			var p powerCut
			p.install(t, &skip)
			base := t.TempDir()
			s, err := Open(base)
			if err != nil {
				t.Fatal(err)
			}
			skip.Store(noSync)
			var wg sync.WaitGroup
			for i := 0; i < 40; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					id := fmt.Sprintf("p%03d", i)
					if err := s.Create(&Record{ID: id, Pool: "p", Phase: Creating}); err != nil {
						t.Error(err)
						return
					}
					if err := s.Save(&Record{ID: id, Pool: "p", Phase: Booting, PID: i}); err != nil {
						t.Error(err)
					}
				}()
			}
			wg.Wait()
			s.Close()
			p.cut(t, filepath.Join(base, logName(0)))
			s2, err := Open(base)
			if err != nil {
				t.Fatal(err)
			}
			recs, _ := s2.List()
			booting := 0
			for _, r := range recs {
				if r.Phase == Booting {
					booting++
				}
			}
			if noSync {
				if booting == 40 {
					t.Fatal("control: without the sync every record survived the cut; the test proves nothing")
				}
				return
			}
			if len(recs) != 40 || booting != 40 {
				t.Fatalf("after the power cut: %d records, %d booting; want 40 booting", len(recs), booting)
			}
		})
	}
}

// Writers that arrive while a sync runs share the next one: 100 Creates
// that wait behind one slow sync commit in one more.
func TestWritersArrivingDuringASyncShareTheNext(t *testing.T) {
	base := t.TempDir()
	s, err := Open(base)
	if err != nil {
		t.Fatal(err)
	}
	var syncs atomic.Int64
	first := make(chan struct{})
	var once sync.Once
	old := syncFile
	syncFile = func(f *os.File) error {
		if syncs.Add(1) == 1 {
			<-first
		}
		return old(f)
	}
	t.Cleanup(func() { syncFile = old })
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := s.Create(&Record{ID: "lead", Pool: "p"}); err != nil {
			t.Error(err)
		}
	}()
	for syncs.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	for i := 0; i < 100; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.Create(&Record{ID: fmt.Sprintf("w%03d", i), Pool: "p"}); err != nil {
				t.Error(err)
			}
		}()
	}
	for {
		s.j.mu.Lock()
		n := bytes.Count(s.j.pending, []byte(`"pool":"p"`))
		s.j.mu.Unlock()
		if n >= 100 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	once.Do(func() { close(first) })
	wg.Wait()
	if n := syncs.Load(); n != 2 {
		t.Fatalf("101 writes, 100 of them queued behind one sync, took %d syncs; want 2", n)
	}
	if recs, _ := s.List(); len(recs) != 101 {
		t.Fatalf("%d records, want 101", len(recs))
	}
}

// Past its bound the log is compacted: a snapshot of the live records
// and a new, empty log; the old log goes. What is read back is the same,
// before and after, and after a restart; a crash's leftovers of a
// compaction (a half-made snapshot, a log of another generation) are
// removed at Open.
func TestCompactionKeepsTheLiveRecords(t *testing.T) {
	base := t.TempDir()
	s, err := Open(base)
	if err != nil {
		t.Fatal(err)
	}
	s.j.compactAt = 2000
	for i := 0; i < 60; i++ {
		id := fmt.Sprintf("c%03d", i)
		if err := s.Create(&Record{ID: id, Pool: "p", Phase: Creating}); err != nil {
			t.Fatal(err)
		}
		if err := s.Save(&Record{ID: id, Pool: "p", Phase: Idle, PID: i}); err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			if err := s.Remove(id); err != nil {
				t.Fatal(err)
			}
		}
	}
	s.j.mu.Lock()
	gen := s.j.gen
	s.j.mu.Unlock()
	if gen == 0 {
		t.Fatal("the log was never compacted")
	}
	if _, err := os.Stat(filepath.Join(base, logName(0))); !os.IsNotExist(err) {
		t.Fatalf("the first log is still there: %v", err)
	}
	want, _ := s.List()
	if len(want) != 30 {
		t.Fatalf("%d records, want 30", len(want))
	}
	s.Close()
	os.WriteFile(filepath.Join(base, snapTmp), []byte("half"), 0o600)
	os.WriteFile(filepath.Join(base, logName(gen+1)), nil, 0o600)
	s2, err := Open(base)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := s2.List()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("after a restart:\n%v\nwant\n%v", got, want)
	}
	for _, left := range []string{snapTmp, logName(gen + 1)} {
		if _, err := os.Stat(filepath.Join(base, left)); !os.IsNotExist(err) {
			t.Errorf("%s left after Open", left)
		}
	}
	if r, _ := ReadRecords(base); fmt.Sprint(r) != fmt.Sprint(want) {
		t.Fatalf("ReadRecords differs from List")
	}
	// Writes go on in the new generation.
	if err := s2.Save(&Record{ID: "c001", Pool: "p", Phase: Busy}); err != nil {
		t.Fatal(err)
	}
	s2.Close()
	s3, _ := Open(base)
	recs, _ := s3.List()
	if len(recs) != 30 || recs[0].ID != "c001" || recs[0].Phase != Busy {
		t.Fatalf("after a save in the new generation: %v", recs[0])
	}
}

// The records of the store's earlier versions (state.json in each VM
// directory) move into the log at Open, and the files go; a torn one is
// listed as unreadable (for recovery to clean up); one naming another VM
// stays where it is, unread.
func TestOpenMovesPerVMRecordFilesIntoTheLog(t *testing.T) {
	base := t.TempDir()
	for id, body := range map[string]string{
		"0ld1":  `{"id":"0ld1","pool":"p","phase":"busy","seq":4,"agent_token":"t"}`,
		"t0rn":  `{"id":"t0rn","pool":"p","pha`,
		"0ther": `{"id":"elsewhere","pool":"p"}`,
	} {
		os.Mkdir(filepath.Join(base, id), 0o700)
		os.WriteFile(filepath.Join(base, id, legacyRecordFile), []byte(body), 0o600)
	}
	s, err := Open(base)
	if err != nil {
		t.Fatal(err)
	}
	recs, _ := s.List()
	if len(recs) != 2 || recs[0].ID != "0ld1" || recs[0].Phase != Busy || recs[0].AgentToken != "t" ||
		recs[1].ID != "t0rn" || !strings.HasPrefix(recs[1].Reason, "unreadable state") {
		t.Fatalf("records after the move: %v; want 0ld1 busy, t0rn unreadable", recs)
	}
	for _, id := range []string{"0ld1", "t0rn"} {
		if _, err := os.Stat(filepath.Join(base, id, legacyRecordFile)); !os.IsNotExist(err) {
			t.Errorf("%s's moved record file is still there", id)
		}
	}
	if _, err := os.Stat(filepath.Join(base, "0ther", legacyRecordFile)); err != nil {
		t.Errorf("another VM's record file was removed: %v", err)
	}
	// The sequence goes on from the moved record's.
	if err := s.Save(&Record{ID: "0ld1", Pool: "p", Phase: Idle, Seq: 3}); err != nil {
		t.Fatal(err)
	}
	if recs, _ := s.List(); recs[0].Phase != Busy {
		t.Fatal("an older record replaced the moved one")
	}
}

// A log left open to group or others (records hold runners' credentials)
// is made the owner's only at Open.
func TestOpenMakesTheLogTheOwnersOnly(t *testing.T) {
	base := t.TempDir()
	s, err := Open(base)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	path := filepath.Join(base, logName(0))
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(base); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("log mode after Open: %v, %v; want 0600", fi.Mode().Perm(), err)
	}
}

// A save that comes after the VM's removal (a late writer of a VM torn
// down) fails and brings no record back, now or after a restart.
func TestASaveAfterRemoveBringsNoRecordBack(t *testing.T) {
	base := t.TempDir()
	s, err := Open(base)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Create(&Record{ID: "l4te", Pool: "p", Phase: Idle}); err != nil {
		t.Fatal(err)
	}
	if err := s.Save(&Record{ID: "l4te", Pool: "p", Phase: Busy}); err != nil {
		t.Fatalf("control: a save of a live record: %v", err)
	}
	if err := s.Remove("l4te"); err != nil {
		t.Fatal(err)
	}
	if err := s.Save(&Record{ID: "l4te", Pool: "p", Phase: Done}); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a save after the removal: %v, want ErrNotExist", err)
	}
	s.Close()
	if recs, err := ReadRecords(base); err != nil || len(recs) != 0 {
		t.Fatalf("records after a late save: %v, %v", recs, err)
	}
}
