package vmstate

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
)

// The records live in one append-only log in the state directory, not in
// a file per VM: a burst of VM starts makes its records durable with one
// fsync per batch of writers (group commit) instead of a file creation,
// rename and two fsyncs per record, which cost ext4 about 1.2 ms of
// kernel CPU per VM start (docs/performance.md, "A journal that is the
// state"). The log is the state: read back into memory at Open, and
// rewritten as a snapshot (plus an empty log) when it grows past a bound.
//
// Files (names with a dot: no VM id, so no VM directory):
//
//	records.<gen>.log  entries appended since snapshot <gen>
//	records.snap       the live records at the start of log <gen>
//
// Each entry is framed: payload length (uint32, little endian), CRC-32C
// of the payload (uint32), payload. A payload is a kind byte and data:
// 'r' and a record's JSON, 'x' and a removed VM's id, 'g' and the
// snapshot's generation (decimal; the snapshot's first entry).
const (
	logPrefix, logSuffix = "records.", ".log"
	snapFile             = "records.snap"
	snapTmp              = "." + snapFile + ".tmp"

	kindRecord  = 'r'
	kindRemoved = 'x'
	kindGen     = 'g'

	headerLen = 8
	// maxEntry bounds an entry's payload: a length past it is a torn or
	// corrupt frame, not an allocation to make.
	maxEntry = 16 << 20
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

func logName(gen uint64) string { return logPrefix + strconv.FormatUint(gen, 10) + logSuffix }

// frame is payload framed as one entry.
func frame(kind byte, data []byte) []byte {
	b := make([]byte, headerLen+1+len(data))
	b[headerLen] = kind
	copy(b[headerLen+1:], data)
	binary.LittleEndian.PutUint32(b[0:4], uint32(1+len(data)))
	binary.LittleEndian.PutUint32(b[4:8], crc32.Checksum(b[headerLen:], crcTable))
	return b
}

// errTorn: the entries end in a frame cut short or not matching its
// checksum.
var errTorn = errors.New("torn or corrupt entry")

// scan calls fn with each whole entry of r (kind, data, the entry's
// framed length) in order. It returns the length of the whole entries
// read, and errTorn if a partial or corrupt entry follows them.
func scan(r io.Reader, fn func(kind byte, data []byte, framed int) error) (int64, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	var n int64
	var hdr [headerLen]byte
	for {
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			if errors.Is(err, io.EOF) {
				return n, nil
			}
			if errors.Is(err, io.ErrUnexpectedEOF) {
				return n, errTorn
			}
			return n, err
		}
		size := binary.LittleEndian.Uint32(hdr[0:4])
		if size == 0 || size > maxEntry {
			return n, errTorn
		}
		payload := make([]byte, size)
		if _, err := io.ReadFull(br, payload); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return n, errTorn
			}
			return n, err
		}
		if crc32.Checksum(payload, crcTable) != binary.LittleEndian.Uint32(hdr[4:8]) {
			return n, errTorn
		}
		if err := fn(payload[0], payload[1:], headerLen+int(size)); err != nil {
			return n, err
		}
		n += int64(headerLen + int(size))
	}
}

// frameAfter reports the offset of the first whole entry (a length in
// bounds, a matching checksum, a known kind) that starts in f's first
// size bytes past the bad frame at offset bad.
func frameAfter(f *os.File, bad, size int64) (int64, bool) {
	if size <= bad {
		return 0, false
	}
	b := make([]byte, size-bad)
	if _, err := f.ReadAt(b, bad); err != nil && !errors.Is(err, io.EOF) {
		return 0, false
	}
	for o := 1; o+headerLen < len(b); o++ {
		size := int(binary.LittleEndian.Uint32(b[o : o+4]))
		if size == 0 || size > maxEntry || o+headerLen+size > len(b) {
			continue
		}
		p := b[o+headerLen : o+headerLen+size]
		if k := p[0]; k != kindRecord && k != kindRemoved && k != kindGen {
			continue
		}
		if crc32.Checksum(p, crcTable) == binary.LittleEndian.Uint32(b[o+4:o+8]) {
			return bad + int64(o), true
		}
	}
	return 0, false
}

// replayLog is the one rule by which a log is read, by Open and by
// ReadRecords alike: fn gets each whole entry from the start of f, as
// far as f's size when replayLog began (a writer's later bytes are not
// read); whole is the length of those entries, and torn is true when
// bytes follow them that are a torn or corrupt tail: a bad frame with no
// whole entry after it, which no writer was ever told is durable. A bad
// frame followed by a whole entry is corruption in the middle of the
// log, not a torn tail: cutting there would drop entries reported
// durable, so it is an error naming the file and both offsets.
func replayLog(f *os.File, fn func(kind byte, data []byte, framed int) error) (whole int64, torn bool, err error) {
	fi, err := f.Stat()
	if err != nil {
		return 0, false, err
	}
	size := fi.Size()
	whole, err = scan(io.NewSectionReader(f, 0, size), fn)
	if err != nil && !errors.Is(err, errTorn) {
		return whole, false, fmt.Errorf("read %s: %w", f.Name(), err)
	}
	if size <= whole {
		return whole, false, nil
	}
	if at, ok := frameAfter(f, whole, size); ok {
		return whole, false, fmt.Errorf("%s is corrupt at offset %d, with a whole entry after it at offset %d: not a torn tail", f.Name(), whole, at)
	}
	return whole, true, nil
}

// state is the live records, framed, by VM id: what replaying the
// snapshot and the log gives.
type state map[string][]byte

// apply replays one entry into st.
func (st state) apply(kind byte, data []byte) error {
	switch kind {
	case kindRecord:
		id, err := recordID(data)
		if err != nil {
			return err
		}
		st[id] = frame(kindRecord, data)
	case kindRemoved:
		delete(st, string(data))
	case kindGen:
	default:
		return fmt.Errorf("unknown entry kind %q", kind)
	}
	return nil
}

// readSnapshot reads dir's snapshot into st and returns its generation
// (0, st empty, when there is none). The snapshot is whole or absent (it
// is synced before its rename into place): a torn one is an error.
func readSnapshot(dir string, st state) (uint64, error) {
	f, err := os.Open(filepath.Join(dir, snapFile))
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var gen uint64
	first := true
	_, err = scan(f, func(kind byte, data []byte, _ int) error {
		if first {
			first = false
			if kind != kindGen {
				return errors.New("no generation first")
			}
			g, err := strconv.ParseUint(string(data), 10, 64)
			gen = g
			return err
		}
		return st.apply(kind, data)
	})
	if err == nil && first {
		err = errors.New("empty")
	}
	if err != nil {
		return 0, fmt.Errorf("snapshot %s: %w", filepath.Join(dir, snapFile), err)
	}
	return gen, nil
}

// ReadRecords reads the records of the store in dir without opening it
// (no repair, nothing written): for tools and tests that look at a
// running orchestrator's state. The log is read by Open's rule
// (replayLog): an entry being written (a torn end) is left out, where Open
// would cut it, and a corrupt middle is an error, as Open's. Records come
// oldest first, as from List.
func ReadRecords(dir string) ([]*Record, error) {
	for {
		st := state{}
		gen, err := readSnapshot(dir, st)
		if err != nil {
			return nil, fmt.Errorf("vm state: %w", err)
		}
		f, err := os.Open(filepath.Join(dir, logName(gen)))
		if errors.Is(err, os.ErrNotExist) {
			// A compaction under way: read the next generation.
			if again, serr := readSnapshot(dir, state{}); serr == nil && again != gen {
				continue
			}
			return st.records(), nil
		}
		if err != nil {
			return nil, fmt.Errorf("vm state: %w", err)
		}
		// A torn tail (an entry being written) is left out, not cut.
		_, _, err = replayLog(f, func(kind byte, data []byte, _ int) error { return st.apply(kind, data) })
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("vm state: %w; refusing to read", err)
		}
		return st.records(), nil
	}
}

// batch is the writers waiting for one fsync.
type batch struct {
	done chan struct{}
	err  error
}

// journal appends entries to the log with group commit: a writer that
// finds no commit under way writes and syncs everything pending; writers
// arriving meanwhile add to the next batch, which one write and one sync
// commit once the running one ends.
type journal struct {
	dir string
	// compactAt: the log's size past which it is compacted (when it is
	// also 4 times the last snapshot); tests lower it.
	compactAt int64
	// syncDir makes the names in dir durable (the package's syncDir);
	// tests make it fail.
	syncDir func(dir string) error

	mu       sync.Mutex
	live     state // as of the entries durable in the log
	f        *os.File
	gen      uint64
	size     int64 // bytes in the log, all synced
	snapSize int64
	// byID: the bytes of each live VM's entries in the log; dead: the
	// bytes of removed VMs' entries (their runner credentials among
	// them), which past deadAt start a compaction that drops them.
	byID     map[string]int64
	dead     int64
	deadAt   int64
	pending  []byte
	ops      []op   // the pending entries
	next     *batch // the batch the pending entries commit in
	flushing bool
	idle     *sync.Cond // on mu: broadcast when flushing ends
	// broken: a failed commit could not be undone (the log not cut back
	// to its synced bytes), or the store was closed: every later write
	// fails with it; a restart replays what is durable.
	broken error
}

// op is one entry pending: the VM it is of and the entry.
type op struct {
	id    string
	entry []byte
}

// defaultCompactAt: 4 MiB of log (about 6,000 record writes).
const defaultCompactAt = 4 << 20

// defaultDeadAt: 256 KiB of removed VMs' entries in the log start a
// compaction, so removed runners' credentials do not stay in it for
// the 4 MiB of defaultCompactAt.
const defaultDeadAt = 256 << 10

// count adds an entry of framed bytes for id (kind: the entry's) to
// byID and dead.
func (j *journal) count(kind byte, id string, framed int64) {
	j.byID[id] += framed
	if kind == kindRemoved {
		j.dead += j.byID[id]
		delete(j.byID, id)
	}
}

// openJournal replays dir's snapshot and log, cuts a torn tail off the
// log (logged), removes files of older generations, and opens the log
// for appends.
func openJournal(dir string, log *slog.Logger) (*journal, error) {
	j := &journal{dir: dir, compactAt: defaultCompactAt, deadAt: defaultDeadAt, byID: map[string]int64{}, syncDir: syncDir, live: state{}, next: newBatch()}
	j.idle = sync.NewCond(&j.mu)
	gen, err := readSnapshot(dir, j.live)
	if err != nil {
		return nil, err
	}
	if fi, err := os.Stat(filepath.Join(dir, snapFile)); err == nil {
		j.snapSize = fi.Size()
	}
	j.gen = gen
	path := filepath.Join(dir, logName(gen))
	_, statErr := os.Stat(path)
	if errors.Is(statErr, os.ErrNotExist) {
		// The snapshot's log is made (and its name synced) before the
		// snapshot is renamed into place: an older log with none of the
		// snapshot's generation holds entries the snapshot may lack.
		// Never remove it; refuse.
		if old := olderLogs(dir, gen); len(old) > 0 {
			return nil, fmt.Errorf("vm state: %s is missing but older log %s is there (snapshot generation %d): refusing to open; the older log may hold records the snapshot lacks", path, filepath.Join(dir, old[0]), gen)
		}
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	// The records hold runners' credentials: the log is the owner's only,
	// whatever mode it was left with.
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return nil, err
	}
	whole, torn, err := replayLog(f, func(kind byte, data []byte, framed int) error {
		if err := j.live.apply(kind, data); err != nil {
			return err
		}
		switch kind {
		case kindRecord:
			id, _ := recordID(data) // apply checked it
			j.count(kind, id, int64(framed))
		case kindRemoved:
			j.count(kind, string(data), int64(framed))
		}
		return nil
	})
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("vm state: %w; refusing to open (nothing cut)", err)
	}
	if torn {
		// A write a crash cut short, or a corrupt entry: nothing after
		// it was ever reported durable (each batch is synced before its
		// writers return, and no batch follows a failed one).
		log.Warn("vm state: cutting the log's torn or corrupt tail", "file", path, "offset", whole)
		err := f.Truncate(whole)
		if err == nil {
			err = syncFile(f)
		}
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("cut %s: %w", path, err)
		}
	}
	if _, err := f.Seek(whole, io.SeekStart); err != nil {
		f.Close()
		return nil, err
	}
	j.f, j.size = f, whole
	// Older generations, and a snapshot a crash left half-made.
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		n := e.Name()
		if n == snapTmp || (strings.HasPrefix(n, logPrefix) && strings.HasSuffix(n, logSuffix) && n != logName(gen)) {
			os.Remove(filepath.Join(dir, n))
		}
	}
	if errors.Is(statErr, os.ErrNotExist) {
		if err := syncDir(dir); err != nil {
			f.Close()
			return nil, err
		}
	}
	return j, nil
}

// olderLogs lists the logs in dir of a generation below gen.
func olderLogs(dir string, gen uint64) []string {
	var out []string
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		n := e.Name()
		if !strings.HasPrefix(n, logPrefix) || !strings.HasSuffix(n, logSuffix) {
			continue
		}
		g, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(n, logPrefix), logSuffix), 10, 64)
		if err == nil && g < gen {
			out = append(out, n)
		}
	}
	return out
}

func newBatch() *batch { return &batch{done: make(chan struct{})} }

// append adds the entry (framed) for id, updating the live state, and
// returns once it is durable. Entries of one VM are appended by one
// writer at a time (the caller holds the VM's lock), so they commit in
// the order appended.
func (j *journal) append(id string, entry []byte) error {
	j.mu.Lock()
	if j.broken != nil {
		err := j.broken
		j.mu.Unlock()
		return err
	}
	j.pending = append(j.pending, entry...)
	j.ops = append(j.ops, op{id, entry})
	mine := j.next
	lead := !j.flushing
	j.flushing = true
	j.mu.Unlock()
	if lead {
		j.flush()
	}
	<-mine.done
	return mine.err
}

// flush commits the pending entries in one write and one sync, compacts
// when the log is past its bound, and hands the entries queued
// meanwhile to a goroutine of their own, so the writer that led a
// commit is not held past it. The caller set flushing.
//
// A failed write or sync (a full disk) fails the batch's writers, and
// the log is cut back to its synced bytes and synced again: what the
// failed commit left (a partial entry, pages the kernel may have
// dropped) is gone, so the next batch may follow. Only if that fails
// too is the journal broken.
func (j *journal) flush() {
	j.mu.Lock()
	data, ops, b, f, size := j.pending, j.ops, j.next, j.f, j.size
	j.pending, j.ops, j.next = nil, nil, newBatch()
	// A broken journal (a compaction left the generation in doubt, or
	// the store closed) writes nothing more: the batch fails.
	wasBroken := j.broken
	err := wasBroken
	j.mu.Unlock()
	if err == nil {
		_, err = f.Write(data)
		if err == nil {
			err = syncFile(f)
		}
	}
	var broken error
	if err != nil && wasBroken == nil {
		err = fmt.Errorf("vm state: commit to %s: %w", f.Name(), err)
		if terr := undo(f, size); terr != nil {
			broken = fmt.Errorf("%w; cutting the failed commit off: %w", err, terr)
		}
	}
	j.mu.Lock()
	if err == nil {
		for _, o := range ops {
			j.count(o.entry[headerLen], o.id, int64(len(o.entry)))
			if o.entry[headerLen] == kindRemoved {
				delete(j.live, o.id)
			} else {
				j.live[o.id] = o.entry
			}
		}
		j.size += int64(len(data))
	}
	if broken != nil && j.broken == nil {
		j.broken = broken
	}
	compact := j.broken == nil && (j.size > j.compactAt && j.size > 4*j.snapSize || j.dead > j.deadAt)
	j.mu.Unlock()
	b.err = err
	close(b.done)
	if compact {
		if err := j.compact(); err != nil {
			slog.Warn("vm state: compaction failed; the log stays as it is", "dir", j.dir, "err", err)
			j.mu.Lock()
			j.snapSize = j.size // not again before it grows 4 times
			j.dead = 0          // nor before as many removed VMs' bytes again
			j.mu.Unlock()
		}
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if len(j.pending) > 0 {
		go j.flush()
		return
	}
	j.flushing = false
	j.idle.Broadcast()
}

// undo cuts f back to its synced size and syncs it.
func undo(f *os.File, size int64) error {
	if err := f.Truncate(size); err != nil {
		return err
	}
	if _, err := f.Seek(size, io.SeekStart); err != nil {
		return err
	}
	return syncFile(f)
}

// compact writes the live records as snapshot gen+1 and starts the
// empty log gen+1: the new log is created and its name synced, the
// snapshot written to a temporary file, synced, renamed into place and
// its name synced, then the old log removed. A crash before the rename
// leaves the old snapshot and log, whole; after it, the new ones. The
// caller leads the commits (flushing), so no write to the log runs
// meanwhile: the live state is the log's, and the entries appended
// meanwhile stay pending, for the new log.
func (j *journal) compact() error {
	j.mu.Lock()
	gen := j.gen + 1
	snap := frame(kindGen, []byte(strconv.FormatUint(gen, 10)))
	for _, e := range j.live {
		snap = append(snap, e...)
	}
	j.mu.Unlock()
	newLog := filepath.Join(j.dir, logName(gen))
	nf, err := os.OpenFile(newLog, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	err = j.syncDir(j.dir)
	if err == nil {
		err = writeSynced(filepath.Join(j.dir, snapTmp), snap)
	}
	if err == nil {
		err = os.Rename(filepath.Join(j.dir, snapTmp), filepath.Join(j.dir, snapFile))
	}
	if err != nil {
		nf.Close()
		os.Remove(newLog)
		os.Remove(filepath.Join(j.dir, snapTmp))
		return err
	}
	if err := j.syncDir(j.dir); err != nil {
		// The snapshot of g+1 is in place, maybe not durably: a crash may
		// find either generation, so neither log may be removed nor
		// written (an append to log g is lost if snapshot g+1 stays, one
		// to log g+1 if the rename is undone). The journal is broken:
		// writes fail, and the next Open replays whichever snapshot the
		// disk kept with its log, both whole.
		nf.Close()
		err = fmt.Errorf("vm state: compaction: sync %s after the snapshot's rename: %w", j.dir, err)
		j.mu.Lock()
		if j.broken == nil {
			j.broken = err
		}
		j.mu.Unlock()
		return err
	}
	j.mu.Lock()
	old := j.f
	j.f, j.gen, j.size, j.snapSize = nf, gen, 0, int64(len(snap))
	j.byID, j.dead = map[string]int64{}, 0
	j.mu.Unlock()
	old.Close()
	os.Remove(old.Name())
	return nil
}

// writeSynced creates path anew with b in it, synced.
func writeSynced(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = syncFile(f)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// close closes the log: writes fail after it. It waits for a commit or
// compaction under way to end first, so neither writes to a closed log
// nor renames a snapshot after the store's lock is released.
func (j *journal) close() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.broken == nil {
		j.broken = errors.New("vm state: store closed")
	}
	for j.flushing {
		j.idle.Wait()
	}
	return j.f.Close()
}
