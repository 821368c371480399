// Package vmstate keeps each VM's record on disk, one directory per VM
// under the state directory, written atomically and durably (fsync of the
// file and of its directory) on every change. After a
// crash the records say what a previous run left behind: processes, TAPs,
// addresses, files and forge runners.
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
	// hold the runner's own credential (Gitea): the record is a file of
	// mode 0600 in a directory of mode 0700 (see writeRecord), the API's
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

// recordFile is the record's name in its VM's directory; a directory
// without it, or whose record names another VM, is not the store's.
const recordFile = "state.json"

// tmpRecordFile is a record being written, before its rename over
// recordFile; a VM's writes are one at a time (its record lock).
const tmpRecordFile = "." + recordFile + ".tmp"

// idPattern is what a VM id looks like (the orchestrator makes 12 hex
// digits); only directories named so are the store's.
var idPattern = regexp.MustCompile(`^[0-9a-z][0-9a-z-]{0,63}$`)

// ValidID reports whether id can name a VM directory of the store.
func ValidID(id string) bool { return idPattern.MatchString(id) }

// newDirPrefix names a VM directory being made: Create fills it and
// renames it into place, so every VM directory holds a record.
const newDirPrefix = ".new-"

// syncFile flushes f to disk; tests count the calls.
var syncFile = func(f *os.File) error { return f.Sync() }

// Store is the directory of VM records.
type Store struct {
	dir string

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
// (each one durable: see writeRecord), or to hold them in tests. fn must
// not call the store for the same VM.
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
// highest Seq written.
type recordLock struct {
	mu  sync.Mutex
	seq uint64
	// read: seq was read back from disk (a record written by an earlier
	// store, e.g. a previous run).
	read bool
}

// Open uses dir (created if needed) for VM directories.
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
	return &Store{dir: dir, recs: map[string]*recordLock{}, removeTree: os.RemoveAll}, nil
}

// Dir is the VM's own directory.
func (s *Store) Dir(id string) string { return filepath.Join(s.dir, id) }

func (s *Store) lockOf(id string) *recordLock {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.recs[id]
	if l == nil {
		l = &recordLock{}
		s.recs[id] = l
	}
	return l
}

// Create makes the VM's directory with its first record in it: the
// directory is filled under a temporary name and renamed into place, so
// no crash leaves a VM directory without a record.
func (s *Store) Create(r *Record) error {
	if !ValidID(r.ID) {
		return fmt.Errorf("vm %q: invalid id", r.ID)
	}
	if _, err := os.Lstat(s.Dir(r.ID)); err == nil {
		return fmt.Errorf("vm %s: create directory: %w", r.ID, os.ErrExist)
	}
	tmp, err := os.MkdirTemp(s.dir, newDirPrefix+r.ID+"-")
	if err != nil {
		return fmt.Errorf("vm %s: create directory: %w", r.ID, err)
	}
	l := s.lockOf(r.ID)
	l.mu.Lock()
	defer l.mu.Unlock()
	s.wrote(r)
	// The directory is the Create's alone until renamed: the record goes
	// in under its own name, no temporary file.
	f, err := writeFile(filepath.Join(tmp, recordFile), r)
	if err != nil {
		os.RemoveAll(tmp)
		return err
	}
	// Rename does not replace a directory that holds anything: a VM
	// directory made meanwhile stays (the rename fails).
	c := commit{file: f, newDir: tmp, from: tmp, to: s.Dir(r.ID), dir: s.dir}
	if err := c.do(); err != nil {
		return fmt.Errorf("vm %s: create directory: %w", r.ID, err)
	}
	l.seq, l.read = r.Seq, true
	return nil
}

// Save writes r atomically and durably. A record older than the one
// already saved (a lower Seq) is not written: the newer stays.
func (s *Store) Save(r *Record) error {
	if !ValidID(r.ID) {
		return fmt.Errorf("vm %q: invalid id", r.ID)
	}
	l := s.lockOf(r.ID)
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.read {
		// The first save of a record this store did not create: go on
		// from the sequence on disk.
		if b, err := os.ReadFile(filepath.Join(s.Dir(r.ID), recordFile)); err == nil {
			var old Record
			if json.Unmarshal(b, &old) == nil {
				l.seq = max(l.seq, old.Seq)
			}
		}
		l.read = true
	}
	if r.Seq == 0 {
		r.Seq = l.seq + 1
	} else if r.Seq <= l.seq {
		return nil // a newer record is saved already
	}
	s.wrote(r)
	if err := writeRecord(s.Dir(r.ID), r); err != nil {
		return err
	}
	l.seq = r.Seq
	return nil
}

// writeRecord writes r as dir's record, durably: a temporary file,
// synced, renamed over the record, and the directory synced. The caller
// holds the VM's record lock, so the temporary file's name is the
// write's alone.
func writeRecord(dir string, r *Record) error {
	tmp := filepath.Join(dir, tmpRecordFile)
	// One a crash left goes first: the new one is made, never opened
	// (O_EXCL follows no link put in its place).
	if err := os.Remove(tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("vm %s: write state: %w", r.ID, err)
	}
	f, err := writeFile(tmp, r)
	if err != nil {
		return err
	}
	c := commit{file: f, from: tmp, to: filepath.Join(dir, recordFile), dir: dir}
	if err := c.do(); err != nil {
		return fmt.Errorf("vm %s: write state: %w", r.ID, err)
	}
	return nil
}

// writeFile creates path (mode 0600; it must not exist) and writes r in
// it, not synced: the file is returned open for its commit to sync.
func writeFile(path string, r *Record) (*os.File, error) {
	r.Updated = time.Now().UTC()
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("vm %s: encode state: %w", r.ID, err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("vm %s: write state: %w", r.ID, err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		os.Remove(path)
		return nil, fmt.Errorf("vm %s: write state: %w", r.ID, err)
	}
	return f, nil
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
// out of the VM ids' names before it deletes what it holds, so a crash
// midway never leaves a VM directory without its record (which no List
// would see, and so nothing would ever remove); RemoveUnfinished ends
// such a removal at the next start.
const goneDirPrefix = ".gone-"

// Remove deletes the VM's directory and everything in it. The directory
// leaves the VM's name in one step (a rename, made durable) before its
// contents go: after a crash the VM's directory is either whole, record
// and all, or no longer the VM's.
func (s *Store) Remove(id string) error {
	if !ValidID(id) {
		return fmt.Errorf("vm %q: remove directory: invalid id", id)
	}
	l := s.lockOf(id)
	l.mu.Lock()
	defer l.mu.Unlock()
	var suffix [8]byte
	if _, err := rand.Read(suffix[:]); err != nil {
		return fmt.Errorf("vm %s: remove directory: %w", id, err)
	}
	gone := filepath.Join(s.dir, goneDirPrefix+id+"-"+hex.EncodeToString(suffix[:]))
	err := os.Rename(s.Dir(id), gone)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("vm %s: remove directory: %w", id, err)
	}
	s.mu.Lock()
	delete(s.recs, id)
	s.mu.Unlock()
	if err != nil {
		return nil // removed already
	}
	if err := syncDir(s.dir); err != nil {
		return fmt.Errorf("vm %s: remove directory: %w", id, err)
	}
	if err := s.removeTree(gone); err != nil {
		return fmt.Errorf("vm %s: remove directory: %w", id, err)
	}
	return nil
}

// Empty removes everything in the VM's directory but its record: what a
// VM whose record must outlive it (see Deregistering) no longer needs,
// its runner's credential in its boot files first.
func (s *Store) Empty(id string) error {
	if !ValidID(id) {
		return fmt.Errorf("vm %q: empty directory: invalid id", id)
	}
	l := s.lockOf(id)
	l.mu.Lock()
	defer l.mu.Unlock()
	entries, err := os.ReadDir(s.Dir(id))
	if err != nil {
		return fmt.Errorf("vm %s: empty directory: %w", id, err)
	}
	var errs []error
	for _, e := range entries {
		if e.Name() == recordFile {
			continue
		}
		if err := os.RemoveAll(filepath.Join(s.Dir(id), e.Name())); err != nil {
			errs = append(errs, fmt.Errorf("vm %s: empty directory: %w", id, err))
		}
	}
	return errors.Join(errs...)
}

// List reads every record the store made, oldest first: directories named
// as a VM id holding a record of that VM. A record that cannot be decoded
// is returned with only its ID and the reason set, so it can still be
// cleaned up. Anything else under the directory is not the store's and is
// neither listed nor touched.
func (s *Store) List() ([]*Record, error) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("vm state: list %s: %w", s.dir, err)
	}
	var out []*Record
	for _, e := range entries {
		name := e.Name()
		if !e.IsDir() || !ValidID(name) {
			continue
		}
		b, err := os.ReadFile(filepath.Join(s.dir, name, recordFile))
		if errors.Is(err, os.ErrNotExist) {
			continue // not made by the store
		}
		r := &Record{ID: name}
		if err != nil {
			r.Reason = "unreadable state: " + err.Error()
		} else if err := json.Unmarshal(b, r); err != nil {
			r = &Record{ID: name, Reason: "unreadable state: " + err.Error()}
		} else if r.ID != name {
			continue // another VM's record: not this directory's
		}
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	return out, nil
}

// RemoveUnfinished removes the temporary directories of Creates a crash
// cut short (no monitor ever ran from one: a VM starts after its Create)
// and finishes the Removes a crash cut short. Recovery calls it before
// any VM is created; it would break a Create or Remove running meanwhile.
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
