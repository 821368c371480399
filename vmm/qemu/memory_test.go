package qemu

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
	"github.com/nixos-fireactions/nixos-fireactions/vmm"
)

// TestRestoresShareTheTemplatesMemoryAndNeverWriteIt: a template whose
// RAM is a file saves device state only (its stream is a fraction of
// its memory), and two restores that map the file private run, take
// their identity (the guest writes its memory) and leave the file as it
// was (same sha256, while they run and after). The control: a restore
// of the same state from a memory file of zeros (same size) never
// acknowledges its identity: restores run from the file's pages, not
// from anything in the stream.
func TestRestoresShareTheTemplatesMemoryAndNeverWriteIt(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	r := newWarmRig(t)
	state, _ := r.template(ctx)
	st, err := os.Stat(state)
	if err != nil {
		t.Fatal(err)
	}
	mem := int64(r.spec("x").MemoryMiB) << 20
	if st.Size() > mem/16 {
		t.Fatalf("the template's state is %d bytes for %d of memory: it holds the RAM", st.Size(), mem)
	}
	before := fileSHA(t, r.memory)
	if before == fileSHA(t, zeros(t, mem)) {
		t.Fatal("the template's memory file is all zeros: the guest's RAM was not in it")
	}
	fi, _ := os.Stat(r.memory)
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("the template's memory file has mode %v, want 0600", fi.Mode().Perm())
	}
	for _, name := range []string{"a", "b"} {
		m, s := r.restore(ctx, name, state)
		r.hand(ctx, m, s, agentproto.Identity{Config: agentproto.Config{VMID: "vm-" + name}, Seed: make([]byte, 32), Now: time.Now()})
	}
	if got := fileSHA(t, r.memory); got != before {
		t.Fatalf("the template's memory file changed while its restores ran: %s, was %s", got, before)
	}

	// The control: the same state with a memory of zeros.
	s := r.spec("z")
	s.Restore, s.MemoryFile = state, zeros(t, mem)
	m, err := r.d.Start(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Kill(context.Background())
	step, stop := context.WithTimeout(ctx, 20*time.Second)
	defer stop()
	id, _ := json.Marshal(agentproto.Identity{Config: agentproto.Config{VMID: "vm-z"}, Now: time.Now()})
	if err := m.(vmm.Warm).Resume(step); err == nil {
		if err := m.(vmm.Warm).SendIdentity(step, id); err == nil {
			t.Fatalf("control: a restore with a memory of zeros took its identity; console:\n%s", readConsole(s.ConsoleLog))
		}
	}
	m.Kill(context.Background())
	if got := fileSHA(t, r.memory); got != before {
		t.Fatalf("the template's memory file changed after its restores ended: %s, was %s", got, before)
	}
}

// TestARestoreWithoutItsWholeMemoryFileDoesNotStart: a template's
// memory file missing, empty (QEMU would extend it with zeros) or
// truncated fails Start with an error naming it; no QEMU runs.
func TestARestoreWithoutItsWholeMemoryFileDoesNotStart(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root: the guests' TAPs (make test runs as root)")
	}
	r := &warmRig{t: t, d: &Driver{Binary: "qemu-system-x86_64", Accel: AccelTCG}, kernel: hostKernel(t)}
	r.archive = filepath.Join(t.TempDir(), "any.cpio")
	os.WriteFile(r.archive, []byte("x"), 0o600)
	state := filepath.Join(t.TempDir(), "state")
	os.WriteFile(state, []byte("device state"), 0o600)
	dir := t.TempDir()
	for _, c := range []struct {
		name  string
		size  int64 // -1: no file
		words string
	}{
		{"missing", -1, "no such file"},
		{"empty", 0, "is 0 bytes, the VM's memory 134217728"},
		{"truncated", 64 << 20, "is 67108864 bytes, the VM's memory 134217728"},
		{"longer", 256 << 20, "is 268435456 bytes"},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := r.spec(c.name[:3])
			s.Restore, s.MemoryFile = state, filepath.Join(dir, c.name)
			if c.size >= 0 {
				if err := os.WriteFile(s.MemoryFile, nil, 0o600); err != nil {
					t.Fatal(err)
				}
				os.Truncate(s.MemoryFile, c.size)
			}
			m, err := r.d.Start(context.Background(), s)
			if err == nil {
				m.Kill(context.Background())
				t.Fatal("started")
			}
			if !strings.Contains(err.Error(), "template memory file") || !strings.Contains(err.Error(), c.words) {
				t.Fatalf("got %v, want an error naming the template memory file and %q", err, c.words)
			}
			if c.size < 0 && !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("a missing file: %v does not wrap fs.ErrNotExist", err)
			}
		})
	}
	// The control: a whole one passes the check (QEMU then fails on the
	// bogus state, in Resume).
	s := r.spec("who")
	s.Restore, s.MemoryFile = state, zeros(t, 128<<20)
	m, err := r.d.Start(context.Background(), s)
	if err != nil {
		t.Fatalf("a whole memory file: %v", err)
	}
	m.Kill(context.Background())
}

// zeros is a new sparse file of n zero bytes.
func zeros(t testing.TB, n int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "zeros")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, n); err != nil {
		t.Fatal(err)
	}
	return p
}

func fileSHA(t testing.TB, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return string(h.Sum(nil))
}
