package firecracker

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
	"github.com/nixos-fireactions/nixos-fireactions/internal/double/firecrackerdouble"
	"github.com/nixos-fireactions/nixos-fireactions/internal/hosttest"
	"github.com/nixos-fireactions/nixos-fireactions/vmm"
	"github.com/nixos-fireactions/nixos-fireactions/warmstart"
)

// warmRig is a jailed driver against the double (no guest booted) whose
// guest vsock ports are unix sockets the test listens on.
type warmRig struct {
	d     *Driver
	dir   string // the test's files
	guest string // FCDOUBLE_VSOCK_GUEST
	rec   string // the double's request record
}

func newWarmRig(t *testing.T) *warmRig { return newWarmRigJailed(t, true) }

func newWarmRigJailed(t *testing.T, jailed bool) *warmRig {
	t.Helper()
	hosttest.RequireRoot(t, "the jailer chowns, mknods and drops privileges; TAPs")
	b := buildDouble(t)
	base := jailBase(t)
	_, mounts := fakeCgroups(t, base)
	dir, err := os.MkdirTemp("", "fcwarm")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	// The jailed double (another uid) connects to the guest's stand-in.
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	r := &warmRig{dir: dir, guest: filepath.Join(dir, "guest"), rec: filepath.Join(dir, "record.jsonl")}
	t.Setenv("FCDOUBLE_PROC_MOUNTS", mounts)
	t.Setenv("FCDOUBLE_BOOT", "none")
	t.Setenv("FCDOUBLE_RECORD", r.rec)
	t.Setenv("FCDOUBLE_VSOCK_GUEST", r.guest)
	r.d = &Driver{Binary: b.Firecracker, Jailer: &Jailer{Binary: b.Jailer, ChrootBaseDir: base, UID: jailUID, GID: jailGID, MountTable: mounts}}
	if !jailed {
		r.d.Jailer = nil
	}
	return r
}

// spec is VM id's spec in slot, with an identity channel.
func (r *warmRig) spec(t *testing.T, id string, slot int, tap string) vmm.Spec {
	t.Helper()
	dir := filepath.Join(r.dir, id)
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	s := testSpec
	s.ID, s.Slot, s.Dir, s.ConsoleLog, s.TAP = id, slot, dir, filepath.Join(dir, "console.log"), tap
	s.Kernel, s.Initramfs = filepath.Join(r.dir, "kernel"), filepath.Join(dir, "initramfs")
	s.Identity = filepath.Join(dir, "identity.sock")
	os.WriteFile(s.Kernel, []byte("k"), 0o644)
	os.WriteFile(s.Initramfs, []byte("i"), 0o600)
	killLeftVMMs(t, id)
	return s
}

// gotLines is how many lines listenAgent's got holds unread: more than
// SendIdentity sends, one every 20 ms at most, within the default
// connect wait (5 s / 20 ms = 250 sends).
const gotLines = 256

// lineWait bounds how long listenAgent waits for a connection's line.
const lineWait = 5 * time.Second

// agent is how the agent a test plays on its vsock port answers.
type agent struct {
	drop   int           // the first drop connections end after their line, unanswered (a vsock reset)
	answer string        // the answer to each line it keeps
	after  time.Duration // how long it takes to answer (applying the identity); 0: at once
	// once: after its first line, kept or dropped, it listens no more
	// (the agent, which takes one line).
	once bool
}

// listenAgent plays a on the agent's vsock port, sending each line it
// keeps on got (a line past gotLines fails the test). stop closes the
// port, tells the connections still waiting for their answer to close,
// and returns once the agent takes no more lines: a line read by then is
// on got. The test's end stops it too.
func (r *warmRig) listenAgent(t *testing.T, a agent) (got chan string, stop func()) {
	t.Helper()
	path := r.guest + "_" + strconv.Itoa(agentproto.IdentityVsockPort)
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(path, 0o666)
	got = make(chan string, gotLines)
	done := make(chan struct{})
	var ended sync.WaitGroup
	ended.Add(1)
	go func() {
		defer ended.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			// A connection that never sends its line does not hold
			// the next one for longer than this.
			c.SetReadDeadline(time.Now().Add(lineWait))
			line, err := bufio.NewReader(c).ReadString('\n')
			c.SetReadDeadline(time.Time{})
			if err == nil && a.once {
				ln.Close()
			}
			if err == nil && a.drop > 0 {
				a.drop--
				err = errors.New("dropped")
			}
			if err != nil {
				c.Close()
				continue
			}
			select {
			case got <- line:
			default:
				t.Errorf("the agent's stand-in took more than %d lines", gotLines)
				c.Close()
				continue
			}
			go func() {
				defer c.Close()
				answer := time.NewTimer(a.after)
				defer answer.Stop()
				select {
				case <-answer.C:
					c.Write([]byte(a.answer + "\n"))
				case <-done:
				}
			}()
		}
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() { close(done); ln.Close(); os.Remove(path) })
		ended.Wait()
	}
	t.Cleanup(stop)
	return got, stop
}

// saveTemplate starts tpl, saves it to the state file it returns (in
// the test's directory) and kills it.
func (r *warmRig) saveTemplate(ctx context.Context, t *testing.T, tpl vmm.Spec) string {
	t.Helper()
	m, err := r.d.Start(ctx, tpl)
	if err != nil {
		t.Fatal(err)
	}
	defer kill(t, m)
	state := filepath.Join(r.dir, "state")
	if err := m.(vmm.Warm).SaveState(ctx, state); err != nil {
		t.Fatal(err)
	}
	return state
}

func kill(t *testing.T, m vmm.Machine) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := m.Kill(ctx); err != nil && !errors.Is(err, vmm.ErrKilled) {
		t.Error(err)
	}
}

// TestSaveThenRestoreDeliversTheIdentityOverVsock: a template booted with
// the vsock device (and the agent told so on its command line) is paused
// and snapshotted through the jail; a restore in another slot loads it in
// a fresh process with its own TAP, and its identity reaches the guest's
// vsock port through the device's socket in its own jail once resumed,
// not before (a paused guest takes no connection), and not when no guest
// listens.
func TestSaveThenRestoreDeliversTheIdentityOverVsock(t *testing.T) {
	for _, jailed := range []bool{true, false} {
		t.Run(map[bool]string{true: "jailed", false: "unjailed"}[jailed], func(t *testing.T) {
			saveThenRestore(t, newWarmRigJailed(t, jailed))
		})
	}
}

func saveThenRestore(t *testing.T, r *warmRig) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tap := testTAP(t)
	tpl := r.spec(t, "tpl", 0, tap)
	m, err := r.d.Start(ctx, tpl)
	if err != nil {
		t.Fatal(err)
	}
	w, ok := m.(vmm.Warm)
	if !ok {
		t.Fatal("the firecracker machine is not vmm.Warm")
	}
	state := filepath.Join(r.dir, "state")
	if err := w.SaveState(ctx, state); err != nil {
		t.Fatal(err)
	}
	kill(t, m)
	for _, f := range []string{state, MemFile(state)} {
		st, err := os.Stat(f)
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("saved %s: %v %v", f, st, err)
		}
	}

	rs := r.spec(t, "r1", 1, tap)
	rs.Restore, rs.Initramfs = state, ""
	m2, err := r.d.Start(ctx, rs)
	if err != nil {
		t.Fatal(err)
	}
	defer kill(t, m2)
	w2 := m2.(vmm.Warm)
	got, stop := r.listenAgent(t, agent{answer: agentproto.IdentityAck})
	defer stop()
	short, cancelShort := context.WithTimeout(ctx, time.Second)
	defer cancelShort()
	if err := w2.SendIdentity(short, []byte(`{"paused":true}`)); err == nil {
		t.Fatal("the identity reached a guest that was not resumed")
	}
	if err := w2.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	if err := w2.SendIdentity(ctx, []byte(`{"vm":"r1"}`)); err != nil {
		t.Fatal(err)
	}
	if line := <-got; line != `{"vm":"r1"}`+"\n" {
		t.Fatalf("the guest read %q", line)
	}
	stop()
	// A connection reset before the agent's acknowledgement is tried
	// again: the agent takes the next one.
	got, stop = r.listenAgent(t, agent{drop: 1, answer: agentproto.IdentityAck})
	if err := w2.SendIdentity(ctx, []byte(`{"vm":"r1","again":1}`)); err != nil {
		t.Fatalf("identity after one reset connection: %v", err)
	}
	if line := <-got; line != `{"vm":"r1","again":1}`+"\n" {
		t.Fatalf("the guest read %q after a reset", line)
	}
	stop()
	// An agent that could not apply its identity refuses it: final, not
	// sent again (the agent listens no more; the caller boots cold).
	got, stop = r.listenAgent(t, agent{answer: agentproto.IdentityRefused})
	if err := w2.SendIdentity(ctx, []byte(`{"vm":"r1","refused":1}`)); !errors.Is(err, vmm.ErrIdentityRefused) {
		t.Fatalf("identity the guest refused: %v; want vmm.ErrIdentityRefused", err)
	}
	stop()
	if n := len(got); n != 1 {
		t.Fatalf("the refused identity was sent %d times; want once", n)
	}
	if err := w2.SendIdentity(ctx, []byte(`{"vm":"r1"}`)); err == nil || !strings.Contains(err.Error(), "no connection to the guest") {
		t.Fatalf("identity with no guest listening: %v", err)
	}

	var seq []string
	for _, rec := range readRecord(t, r.rec) {
		seq = append(seq, rec.Method+" "+rec.Path)
		if rec.Status/100 != 2 {
			t.Errorf("the double refused %s %s (%d): %s\n%s", rec.Method, rec.Path, rec.Status, rec.Fault, rec.Body)
		}
		if rec.Path == "/boot-source" && !strings.Contains(rec.Body, agentproto.IdentityChannelParam+"="+agentproto.IdentityChannelVsock) {
			t.Errorf("the template's command line does not name the vsock channel: %s", rec.Body)
		}
	}
	want := "PUT /boot-source, PUT /machine-config, PUT /network-interfaces/eth0, PUT /vsock, PUT /actions, PATCH /vm, PUT /snapshot/create, PUT /snapshot/load, PATCH /vm"
	if strings.Join(seq, ", ") != want {
		t.Errorf("requests\n%s\nwant\n%s", strings.Join(seq, ", "), want)
	}
}

// TestARestoreTheVMMRefusesFailsStart: a snapshot Firecracker cannot load
// fails Start with its fault (the pool boots the VM cold), and nothing
// is left: no process, no jail.
func TestARestoreTheVMMRefusesFailsStart(t *testing.T) {
	r := newWarmRig(t)
	rs := r.spec(t, "bad", 0, testTAP(t))
	rs.Restore = filepath.Join(r.dir, "state")
	os.WriteFile(rs.Restore, []byte("not a snapshot"), 0o644)
	wholeMemory(t, MemFile(rs.Restore), rs.MemoryMiB)
	_, err := r.d.Start(context.Background(), rs)
	var apiErr *APIError
	if !errors.As(err, &apiErr) || apiErr.Path != "/snapshot/load" || !strings.Contains(err.Error(), "restore") {
		t.Fatalf("Start = %v, want the refused load", err)
	}
	if !processGone(rs.ID) {
		t.Error("the refused restore's VMM runs on")
	}
	if _, err := os.Stat(filepath.Join(r.d.Jailer.ChrootBaseDir, "firecracker", rs.ID)); !os.IsNotExist(err) {
		t.Errorf("the refused restore's jail is left (%v)", err)
	}
}

// TestARestoreWithAMissingSnapshotFileIsAClearError: a restore whose
// state or memory file is missing, or whose memory file is not the
// guest's memory size, fails before any process starts, naming the file.
func TestARestoreWithAMissingSnapshotFileIsAClearError(t *testing.T) {
	dir := t.TempDir()
	d := &Driver{Binary: "/nonexistent/firecracker"}
	spec := vmm.Spec{ID: "a", VCPUs: 1, MemoryMiB: 128, Kernel: "/k", TAP: "t", ConsoleLog: filepath.Join(dir, "c"), Dir: dir,
		Identity: filepath.Join(dir, "identity.sock"), Restore: filepath.Join(dir, "state")}
	os.WriteFile(spec.Restore, []byte("s"), 0o644)
	for _, missing := range []string{MemFile(spec.Restore), spec.Restore} {
		os.Remove(missing)
		_, err := d.Start(context.Background(), spec)
		if err == nil || !strings.Contains(err.Error(), "snapshot file") || !strings.Contains(err.Error(), missing) {
			t.Errorf("restore without %s: %v", missing, err)
		}
	}
	// Positive control: with both files, Start gets as far as the VMM
	// (which does not exist here).
	os.WriteFile(spec.Restore, []byte("s"), 0o644)
	wholeMemory(t, MemFile(spec.Restore), spec.MemoryMiB)
	if _, err := d.Start(context.Background(), spec); err == nil || strings.Contains(err.Error(), "snapshot") {
		t.Errorf("restore with both files: %v", err)
	}
	// A memory file cut short (or another shape's) is named too.
	os.Truncate(MemFile(spec.Restore), 4096)
	if _, err := d.Start(context.Background(), spec); err == nil || !strings.Contains(err.Error(), "is 4096 bytes, the VM's memory 134217728: truncated") {
		t.Errorf("restore from a truncated memory file: %v", err)
	}
}

// wholeMemory writes a memory file of miB MiB (sparse).
func wholeMemory(t *testing.T, path string, miB int) {
	t.Helper()
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, int64(miB)<<20); err != nil {
		t.Fatal(err)
	}
}

// TestVersionIsTheBinarys: the template key's VMM is the binary's own
// version line, so a new Firecracker rebuilds the template; a binary
// that prints none is an error.
func TestVersionIsTheBinarys(t *testing.T) {
	b := buildDouble(t)
	v, err := (&Driver{Binary: b.Firecracker}).Version(context.Background())
	if err != nil || v != "firecracker "+firecrackerdouble.LoadSpec(t).Version {
		t.Fatalf("Version = %q, %v", v, err)
	}
	if v, err := (&Driver{Binary: "/bin/true"}).Version(context.Background()); err == nil {
		t.Fatalf("a binary without a version line: %q", v)
	}
}

// With the MMDS on, a restore puts its own metadata document after the
// load (a snapshot keeps the MMDS configuration, not its data store):
// its vm_id, never the template's.
func TestARestoreGetsItsOwnMetadata(t *testing.T) {
	r := newWarmRig(t)
	r.d.MMDS = true
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tap := testTAP(t)
	tpl := r.spec(t, "tplmd", 0, tap)
	tpl.Metadata = map[string]string{"pool": "p"}
	state := r.saveTemplate(ctx, t, tpl)
	rs := r.spec(t, "r1md", 1, tap)
	rs.Restore, rs.Initramfs, rs.Metadata = state, "", map[string]string{"pool": "p"}
	m2, err := r.d.Start(ctx, rs)
	if err != nil {
		t.Fatal(err)
	}
	defer kill(t, m2)
	var loaded, put bool
	for _, rec := range readRecord(t, r.rec) {
		if rec.Status/100 != 2 {
			t.Errorf("the double refused %s %s (%d): %s", rec.Method, rec.Path, rec.Status, rec.Fault)
		}
		switch {
		case rec.Path == "/snapshot/load":
			loaded = true
		case loaded && rec.Method == "PUT" && rec.Path == "/mmds":
			put = true
			if !strings.Contains(rec.Body, `"vm_id":"r1md"`) || strings.Contains(rec.Body, "tplmd") {
				t.Errorf("the restore's metadata: %s", rec.Body)
			}
		}
	}
	if !loaded || !put {
		t.Errorf("snapshot loaded %v, its own metadata put after %v", loaded, put)
	}
}

// A template whose spec names a MemoryFile (the pool's: warmstart's
// MemoryFile beside its state) has its guest memory saved there, so
// warmstart.Seal seals it with the state: a memory file damaged after
// the seal is no template (Open says why; no VM tries it), a whole one
// is what a restore given it as its MemoryFile loads.
func TestATemplatesMemoryIsSavedToItsMemoryFileAndSealed(t *testing.T) {
	for _, jailed := range []bool{true, false} {
		t.Run(map[bool]string{true: "jailed", false: "unjailed"}[jailed], func(t *testing.T) {
			r := newWarmRigJailed(t, jailed)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			tap := testTAP(t)
			tdir := filepath.Join(r.dir, "template")
			if err := os.Mkdir(tdir, 0o700); err != nil {
				t.Fatal(err)
			}
			tpl := r.spec(t, "tplmem", 0, tap)
			tpl.MemoryFile = filepath.Join(tdir, warmstart.MemoryFile)
			m, err := r.d.Start(ctx, tpl)
			if err != nil {
				t.Fatal(err)
			}
			state := filepath.Join(tdir, warmstart.StateFile)
			if err := m.(vmm.Warm).SaveState(ctx, state); err != nil {
				t.Fatal(err)
			}
			kill(t, m)
			if _, err := os.Stat(MemFile(state)); !os.IsNotExist(err) {
				t.Errorf("the memory was saved beside the state too (%v)", err)
			}
			key := warmstart.Key{VMM: "firecracker", Kernel: "k", Image: "i", Agent: "a"}
			if err := warmstart.Seal(tdir, key); err != nil {
				t.Fatal(err)
			}
			sealed, err := warmstart.Open(tdir, key)
			if err != nil || sealed.Memory != tpl.MemoryFile {
				t.Fatalf("the sealed template: %+v, %v; want its memory %s in it", sealed, err, tpl.MemoryFile)
			}
			rs := r.spec(t, "r1mem", 1, tap)
			rs.Restore, rs.MemoryFile, rs.Initramfs = sealed.State, sealed.Memory, ""
			m2, err := r.d.Start(ctx, rs)
			if err != nil {
				t.Fatalf("restore from the sealed template: %v", err)
			}
			kill(t, m2)
			for _, rec := range readRecord(t, r.rec) {
				if rec.Status/100 != 2 {
					t.Errorf("the double refused %s %s (%d): %s", rec.Method, rec.Path, rec.Status, rec.Fault)
				}
			}
			if err := os.Truncate(sealed.Memory, 4096); err != nil {
				t.Fatal(err)
			}
			if got, err := warmstart.Open(tdir, key); err == nil || warmstart.AsFallback(err).Reason != warmstart.ReasonStateTruncated {
				t.Fatalf("a template whose memory was cut short: %+v, %v; want %s", got, err, warmstart.ReasonStateTruncated)
			}
		})
	}
}

// readsAs reports whether a process of uid and gid (no other groups)
// reads path.
func readsAs(t *testing.T, path string, uid, gid int) bool {
	t.Helper()
	cmd := exec.Command("/bin/cat", path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}}
	cmd.Stdout = io.Discard
	return cmd.Run() == nil
}

// TestSnapshotFilesAreReadByTheirRestoresJailsOnly: a template's saved
// state and memory (its RNG state before any reseed) are root's, with no
// bit for group or others; a jailed restore still loads them (the
// double opens them as the jail's uid and gid), through links its jail's
// group is let read by an ACL entry while the jail exists: another user
// reads neither, the jail's group does (positive control), and not once
// the restore is gone.
func TestSnapshotFilesAreReadByTheirRestoresJailsOnly(t *testing.T) {
	r := newWarmRig(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tap := testTAP(t)
	state := r.saveTemplate(ctx, t, r.spec(t, "tplacl", 0, tap))
	files := []string{state, MemFile(state)}
	for _, f := range files {
		if st, err := os.Stat(f); err != nil || st.Mode().Perm()&0o077 != 0 {
			t.Fatalf("saved %s: %v, %v; want no bit for group or others", f, st, err)
		}
	}
	rs := r.spec(t, "r1acl", 1, tap)
	rs.Restore, rs.Initramfs = state, ""
	m2, err := r.d.Start(ctx, rs)
	if err != nil {
		t.Fatalf("a jailed restore of the template's files: %v", err)
	}
	_, gid := r.d.Jailer.IDs(rs)
	for _, f := range files {
		if st, _ := os.Stat(f); st.Mode().Perm()&0o007 != 0 {
			t.Errorf("%s is %v while restored: others may read it", f, st.Mode())
		}
		if readsAs(t, f, 65534, 65534) {
			t.Errorf("another user reads %s", f)
		}
		if !readsAs(t, f, 65534, gid) {
			t.Errorf("the restore's jail group %d does not read %s", gid, f)
		}
		if ok, err := groupCanRead(f, gid+1); ok || err != nil {
			t.Errorf("%s: a jail not linked to it is let read it (%v)", f, err)
		}
	}
	kill(t, m2)
	for _, f := range files {
		if readsAs(t, f, 65534, gid) {
			t.Errorf("the gone restore's jail group %d still reads %s", gid, f)
		}
	}
	for _, rec := range readRecord(t, r.rec) {
		if rec.Status/100 != 2 {
			t.Errorf("the double refused %s %s (%d): %s", rec.Method, rec.Path, rec.Status, rec.Fault)
		}
	}
}
