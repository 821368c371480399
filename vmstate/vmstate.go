// Package vmstate keeps each VM's record on disk, durably (synced before
// each write returns), in one append-only log in the state directory
// with group commit (see journal.go), and a directory per VM for its
// files. After a crash the records say what a previous run left behind:
// processes, TAPs, addresses, files and forge runners.
package vmstate

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"
)

// Phase is where a VM is in its life.
type Phase string

const (
	Creating Phase = "creating" // address, TAP, runner and boot files being made
	Booting  Phase = "booting"  // VMM started; runner not ready yet
	Idle     Phase = "idle"     // runner ready, waiting for its job
	Busy     Phase = "busy"     // running its job
	Done     Phase = "done"     // ended after its job
	Failed   Phase = "failed"   // ended without a job done
	// Deregistering: the VM is gone and all it held on the host freed
	// but its runner, whose removal at the forge failed: the record stays
	// (and survives a restart) until the forge confirms the runner gone.
	Deregistering Phase = "deregistering"
)

// Terminal reports whether a VM in phase p is over.
func (p Phase) Terminal() bool { return p == Done || p == Failed || p == Deregistering }

// Record is one VM's state.
type Record struct {
	ID          string    `json:"id"`
	Pool        string    `json:"pool"`
	Phase       Phase     `json:"phase"`
	PID         int       `json:"pid,omitempty"`
	TAP         string    `json:"tap,omitempty"`
	MAC         string    `json:"mac,omitempty"`
	Address     string    `json:"address,omitempty"`
	RunnerID    string    `json:"runner_id,omitempty"`
	RunnerName  string    `json:"runner_name,omitempty"`
	Created     time.Time `json:"created"`
	Updated     time.Time `json:"updated"`
	Ready       time.Time `json:"ready,omitzero"`
	Busy        time.Time `json:"busy,omitzero"`
	Reason      string    `json:"reason,omitempty"`
	ExitCode    *int      `json:"exit_code,omitempty"`
	ReadyUptime string    `json:"ready_uptime,omitempty"` // guest time from kernel start to runner ready
	// Job is the forge's id of the job the runner took, as the guest
	// reported it: the job to fail at the forge if the VM ends before it.
	Job string `json:"job,omitempty"`
	// RunnerMemo is the forge driver's note of the VM's runner
	// (forge.RunnerMemo): what it needs to fail the runner's job once the
	// runner is gone, kept here so that it outlives a restart. It may
	// hold the runner's own credential (Gitea): the log is a file of
	// mode 0600 in a directory of mode 0700 (see Open), the API's
	// records leave it out, and nothing logs it. Never a scope-wide
	// credential.
	RunnerMemo string `json:"runner_memo,omitempty"`
	// AgentToken authenticates the guest agent's reports; kept so a
	// restarted orchestrator can adopt the VM. It grants nothing else.
	AgentToken string `json:"agent_token,omitempty"`
	// Image is the manifest digest of the OCI image the VM boots (empty
	// for an initramfs root), so a restarted orchestrator that adopts the
	// VM leases that image again and no eviction removes it meanwhile.
	Image string `json:"image,omitempty"`
	// Seq orders a VM's records: the writer numbers each snapshot it
	// takes (under its own lock), and Save never writes a record over one
	// with the same or a higher Seq. Saved with 0, a record is numbered
	// by Save (one past the last saved), in the order of the calls.
	Seq uint64 `json:"seq,omitempty"`
}

// plainRecord is a Record without its methods (LogValue, String).
type plainRecord Record

// redacted is r without its secrets: the runner memo (it may hold the
// runner's own credential) and the agent token.
func (r Record) redacted() plainRecord {
	c := plainRecord(r)
	c.RunnerMemo, c.AgentToken = "", ""
	return c
}

// LogValue implements slog.LogValuer: a record logged shows neither its
// runner memo nor its agent token.
func (r Record) LogValue() slog.Value { return slog.AnyValue(r.redacted()) }

// String is the record for fmt (%v, %+v), without its secrets as in
// LogValue.
func (r Record) String() string { return fmt.Sprintf("%+v", r.redacted()) }

// GoString is the record for %#v, without its secrets as in LogValue.
func (r Record) GoString() string { return fmt.Sprintf("%#v", r.redacted()) }

// idPattern is what a VM id looks like (the orchestrator makes 12 hex
// digits); only directories named so are the store's.
var idPattern = regexp.MustCompile(`^[0-9a-z][0-9a-z-]{0,63}$`)

// ValidID reports whether id can name a VM directory of the store.
func ValidID(id string) bool { return idPattern.MatchString(id) }

// newDirPrefix named a VM directory being made by the store's earlier
// versions (a record file per VM); RemoveUnfinished still removes one
// such a version's crash left.
const newDirPrefix = ".new-"

// legacyRecordFile is the record file per VM of the store's earlier
// versions: Open moves such records into the log and removes the files.
const legacyRecordFile = "state.json"

// syncFile flushes f to disk; tests count the calls.
var syncFile = func(f *os.File) error { return f.Sync() }

// Store is the VM records (one log: see journal.go) and the directory
// holding each VM's files.
type Store struct {
	dir  string
	j    *journal
	lock *os.File // held while the store is open: see lockDir

	mu      sync.Mutex
	recs    map[string]*recordLock // by VM id
	onWrite func(r *Record)

	// removeTree deletes a removed VM's directory, once Remove renamed
	// it out of the VM's name (os.RemoveAll); tests stop it there, as a
	// crash would.
	removeTree func(path string) error
}

// OnWrite has fn called before each record the store writes (by Create
// or Save; not one Save skips as older than the saved), on the writer's
// goroutine, with the writer holding that VM's record: to count writes
// (each one durable: see journal.append), or to hold them in tests. fn
// must not call the store for the same VM.
func (s *Store) OnWrite(fn func(r *Record)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.onWrite = fn
}

// wrote tells the OnWrite function, if any, of a write of r.
func (s *Store) wrote(r *Record) {
	s.mu.Lock()
	fn := s.onWrite
	s.mu.Unlock()
	if fn != nil {
		fn(r)
	}
}

// recordLock serialises the writes of one VM's record and remembers the
// highest Seq written. The store keeps one for each VM with a record,
// and for an id without one only while a call holds or waits for it
// (users), so late calls for VMs long gone leave nothing behind.
type recordLock struct {
	mu    sync.Mutex
	seq   uint64
	users int // calls holding or waiting for mu; under Store.mu
}

// Open uses dir (created if needed, mode 0700) for the VM records' log
// and the VM directories, and reads the records back.
func Open(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("vm state: create %s: %w", dir, err)
	}
	// MkdirAll leaves an existing directory's mode as it is: one left
	// open to group or others (records hold runners' credentials) is
	// made the owner's only.
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("vm state: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("vm state: %s is not a directory", dir)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		if err := os.Chmod(dir, 0o700); err != nil {
			return nil, fmt.Errorf("vm state: %s has mode %v (open to group or others) and cannot be made 0700: %w", dir, fi.Mode().Perm(), err)
		}
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	j, err := openJournal(dir, slog.Default())
	if err != nil {
		lock.Close()
		return nil, fmt.Errorf("vm state: open %s: %w", dir, err)
	}
	s := &Store{dir: dir, j: j, lock: lock, recs: map[string]*recordLock{}, removeTree: os.RemoveAll}
	for _, r := range j.live.records() {
		s.recs[r.ID] = &recordLock{seq: r.Seq}
	}
	if err := s.migrate(); err != nil {
		j.close()
		lock.Close()
		return nil, err
	}
	return s, nil
}

// Close closes the store's log and releases its directory; the store's
// writes fail after it.
func (s *Store) Close() error {
	err := s.j.close()
	if cerr := s.lock.Close(); err == nil {
		err = cerr
	}
	return err
}

// migrate moves the records of the store's earlier versions (a
// state.json in each VM directory) into the log, then removes the files.
func (s *Store) migrate() error {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("vm state: list %s: %w", s.dir, err)
	}
	for _, e := range entries {
		name := e.Name()
		if !e.IsDir() || !ValidID(name) {
			continue
		}
		path := filepath.Join(s.dir, name, legacyRecordFile)
		b, err := os.ReadFile(path)
		if err != nil {
			continue // none: not one of the earlier versions' records
		}
		r := &Record{}
		if err := json.Unmarshal(b, r); err != nil {
			// Torn: kept as a record of only its id and the reason, as
			// the earlier store listed it, for recovery to clean up.
			r = &Record{ID: name, Reason: "unreadable state: " + err.Error()}
		} else if r.ID != name {
			continue // another VM's record: not this directory's
		}
		if _, ok := s.recs[name]; !ok {
			if err := s.j.append(name, encode(r)); err != nil {
				return fmt.Errorf("vm %s: move record into the log: %w", name, err)
			}
			s.recs[name] = &recordLock{seq: r.Seq}
		}
		os.Remove(path)
		os.Remove(filepath.Join(s.dir, name, "."+legacyRecordFile+".tmp"))
	}
	return nil
}

// Dir is the VM's own directory.
func (s *Store) Dir(id string) string { return filepath.Join(s.dir, id) }

// lockOf locks the VM's record lock; unlock releases it.
func (s *Store) lockOf(id string) *recordLock {
	s.mu.Lock()
	l := s.recs[id]
	if l == nil {
		l = &recordLock{}
		s.recs[id] = l
	}
	l.users++
	s.mu.Unlock()
	l.mu.Lock()
	return l
}

// unlock releases l, the lock of id taken by lockOf, and forgets it when
// no other call wants it and the log holds no record of id.
func (s *Store) unlock(id string, l *recordLock) {
	s.mu.Lock()
	l.users--
	if l.users == 0 && !s.has(id) {
		delete(s.recs, id)
	}
	s.mu.Unlock()
	l.mu.Unlock()
}

// encode frames r as a log entry, stamping its Updated time.
func encode(r *Record) []byte {
	r.Updated = time.Now().UTC()
	b, err := json.Marshal(r)
	if err != nil {
		panic(fmt.Sprintf("vm %s: encode state: %v", r.ID, err)) // a Record always encodes
	}
	return frame(kindRecord, b)
}

// recordID is the id of a record's JSON.
func recordID(data []byte) (string, error) {
	var r struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(data, &r); err != nil {
		return "", err
	}
	if !ValidID(r.ID) {
		return "", fmt.Errorf("record of invalid id %q", r.ID)
	}
	return r.ID, nil
}

// records decodes st, oldest first. A record that cannot be decoded is
// returned with only its ID and the reason set, so it can still be
// cleaned up.
func (st state) records() []*Record {
	out := make([]*Record, 0, len(st))
	for id, e := range st {
		r := &Record{}
		if err := json.Unmarshal(e[headerLen+1:], r); err != nil {
			r = &Record{ID: id, Reason: "unreadable state: " + err.Error()}
		}
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Created.Equal(out[j].Created) {
			return out[i].Created.Before(out[j].Created)
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// Create writes the VM's first record, durably, then makes its directory
// (mode 0700). A crash between the two leaves a record without a
// directory, which recovery removes like any other (nothing can have
// been made in a directory that was not there); never a VM directory
// without a record.
func (s *Store) Create(r *Record) error {
	if !ValidID(r.ID) {
		return fmt.Errorf("vm %q: invalid id", r.ID)
	}
	l := s.lockOf(r.ID)
	defer s.unlock(r.ID, l)
	if _, err := os.Lstat(s.Dir(r.ID)); err == nil || s.has(r.ID) {
		return fmt.Errorf("vm %s: create: %w", r.ID, os.ErrExist)
	}
	s.wrote(r)
	if err := s.j.append(r.ID, encode(r)); err != nil {
		return fmt.Errorf("vm %s: write state: %w", r.ID, err)
	}
	if err := os.Mkdir(s.Dir(r.ID), 0o700); err != nil {
		if rerr := s.j.append(r.ID, frame(kindRemoved, []byte(r.ID))); rerr != nil {
			err = errors.Join(err, rerr)
		}
		return fmt.Errorf("vm %s: create directory: %w", r.ID, err)
	}
	l.seq = r.Seq
	return nil
}

// has reports whether the log holds a record of id.
func (s *Store) has(id string) bool {
	s.j.mu.Lock()
	defer s.j.mu.Unlock()
	_, ok := s.j.live[id]
	return ok
}

// Save writes r durably: it returns once r's entry in the log is synced.
// A record older than the one already saved (a lower Seq) is not
// written: the newer stays. The VM's record must exist (Create).
func (s *Store) Save(r *Record) error {
	if !ValidID(r.ID) {
		return fmt.Errorf("vm %q: invalid id", r.ID)
	}
	l := s.lockOf(r.ID)
	defer s.unlock(r.ID, l)
	if !s.has(r.ID) {
		// Removed (a late save of a VM torn down), or never created: a
		// record is made by Create alone, so none comes back to life.
		return fmt.Errorf("vm %s: write state: no record: %w", r.ID, os.ErrNotExist)
	}
	if r.Seq == 0 {
		r.Seq = l.seq + 1
	} else if r.Seq <= l.seq {
		return nil // a newer record is saved already
	}
	s.wrote(r)
	if err := s.j.append(r.ID, encode(r)); err != nil {
		return fmt.Errorf("vm %s: write state: %w", r.ID, err)
	}
	l.seq = r.Seq
	return nil
}

// syncDir makes the names in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return syncFile(d)
}

// goneDirPrefix names a VM directory being removed: Remove renames it
// out of the VM ids' names (durably) before its record's removal is
// logged and its files deleted, so a crash midway never leaves a VM
// directory without its record (which nothing would ever remove);
// RemoveUnfinished ends such a removal at the next start.
const goneDirPrefix = ".gone-"

// Remove deletes the VM's record and its directory with everything in
// it. The directory leaves the VM's name in one step (a rename, made
// durable), then the record's removal is logged (durable), then the
// files go: after a crash the VM is either whole, record and directory,
// or its record alone (which recovery removes), or gone.
func (s *Store) Remove(id string) error {
	if !ValidID(id) {
		return fmt.Errorf("vm %q: remove directory: invalid id", id)
	}
	l := s.lockOf(id)
	defer s.unlock(id, l)
	var suffix [8]byte
	if _, err := rand.Read(suffix[:]); err != nil {
		return fmt.Errorf("vm %s: remove directory: %w", id, err)
	}
	gone := filepath.Join(s.dir, goneDirPrefix+id+"-"+hex.EncodeToString(suffix[:]))
	err := os.Rename(s.Dir(id), gone)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("vm %s: remove directory: %w", id, err)
	}
	renamed := err == nil
	if renamed {
		if err := syncDir(s.dir); err != nil {
			return fmt.Errorf("vm %s: remove directory: %w", id, err)
		}
	}
	if s.has(id) {
		if err := s.j.append(id, frame(kindRemoved, []byte(id))); err != nil {
			return fmt.Errorf("vm %s: remove record: %w", id, err)
		}
	}
	if !renamed {
		return nil // removed already
	}
	if err := s.removeTree(gone); err != nil {
		return fmt.Errorf("vm %s: remove directory: %w", id, err)
	}
	return nil
}

// Empty removes everything in the VM's directory: what a VM whose
// record must outlive it (see Deregistering) no longer needs, its
// runner's credential in its boot files first. The record stays.
func (s *Store) Empty(id string) error {
	if !ValidID(id) {
		return fmt.Errorf("vm %q: empty directory: invalid id", id)
	}
	l := s.lockOf(id)
	defer s.unlock(id, l)
	entries, err := os.ReadDir(s.Dir(id))
	if errors.Is(err, os.ErrNotExist) {
		return nil // nothing in it (a Create a crash cut short)
	}
	if err != nil {
		return fmt.Errorf("vm %s: empty directory: %w", id, err)
	}
	var errs []error
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(s.Dir(id), e.Name())); err != nil {
			errs = append(errs, fmt.Errorf("vm %s: empty directory: %w", id, err))
		}
	}
	return errors.Join(errs...)
}

// List returns every record the store holds, oldest first. Nothing else
// under the directory is the store's: a directory without a record is
// neither listed nor touched.
func (s *Store) List() ([]*Record, error) {
	s.j.mu.Lock()
	defer s.j.mu.Unlock()
	return s.j.live.records(), nil
}

// RemoveUnfinished removes the temporary directories of Creates a crash
// cut short (made by the store's earlier versions) and finishes the
// Removes a crash cut short. Recovery calls it before any VM is created;
// it would break a Remove running meanwhile.
func (s *Store) RemoveUnfinished() error {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("vm state: list %s: %w", s.dir, err)
	}
	var errs []error
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), newDirPrefix)
		if !ok {
			rest, ok = strings.CutPrefix(e.Name(), goneDirPrefix)
		}
		if i := strings.LastIndexByte(rest, '-'); !ok || !e.IsDir() || i <= 0 || !ValidID(rest[:i]) {
			continue
		}
		if err := os.RemoveAll(filepath.Join(s.dir, e.Name())); err != nil {
			errs = append(errs, fmt.Errorf("vm state: remove unfinished %s: %w", e.Name(), err))
		}
	}
	return errors.Join(errs...)
}
