package initramfs

import (
	"bytes"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestWriterEntries(t *testing.T) {
	host := filepath.Join(t.TempDir(), "bin")
	if err := os.WriteFile(host, bytes.Repeat([]byte("agent"), 1001), 0o600); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	w := NewWriter(&buf)
	steps := []error{
		w.MkdirAll("/usr/local/bin", 0o755, 0, 0),
		w.MkdirAll("usr/local", 0o700, 0, 0), // already there: nothing
		w.Dir("/tmp", fs.ModeSticky|0o777, 0, 0),
		w.Dir("/var-tmp", 0o1777, 0, 0),                         // Unix-style sticky bit
		w.File("/etc/x.conf", 0o640, 1000, 1001, []byte("abc")), // 3 bytes: padded
		w.File("/empty", 0o600, 0, 0, nil),
		w.CopyFile("/usr/local/bin/agent", fs.ModeSetuid|0o755, 0, 0, host),
		w.Symlink("/bin", "usr/local/bin", 0, 0),
		w.CharDevice("/dev/console", 0o600, 0, 0, 5, 1),
		w.Close(),
	}
	for i, err := range steps {
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	}
	es, n, err := parseNewc(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if n != buf.Len() || n%4 != 0 {
		t.Errorf("archive is %d bytes, parsed %d", buf.Len(), n)
	}
	want := []struct {
		name  string
		mode  uint32
		uid   uint32
		nlink uint32
		data  string
	}{
		{"usr", 0o040755, 0, 2, ""},
		{"usr/local", 0o040755, 0, 2, ""},
		{"usr/local/bin", 0o040755, 0, 2, ""},
		{"tmp", 0o041777, 0, 2, ""},
		{"var-tmp", 0o041777, 0, 2, ""},
		{"etc/x.conf", 0o100640, 1000, 1, "abc"},
		{"empty", 0o100600, 0, 1, ""},
		{"usr/local/bin/agent", 0o104755, 0, 1, strings.Repeat("agent", 1001)},
		{"bin", 0o120777, 0, 1, "usr/local/bin"},
		{"dev/console", 0o020600, 0, 1, ""},
	}
	if len(es) != len(want) {
		t.Fatalf("%d entries, want %d", len(es), len(want))
	}
	inos := map[uint32]bool{}
	for i, e := range es {
		c := want[i]
		if e.name != c.name || e.mode != c.mode || e.uid != c.uid || e.nlink != c.nlink || string(e.data) != c.data || e.mtime != 0 {
			t.Errorf("entry %d: %s mode %o uid %d nlink %d mtime %d data %q..., want %+v", i, e.name, e.mode, e.uid, e.nlink, e.mtime, trunc(e.data), c)
		}
		if inos[e.ino] || e.ino == 0 {
			t.Errorf("%s: inode %d reused or zero", e.name, e.ino)
		}
		inos[e.ino] = true
	}
	if c := es[5]; c.gid != 1001 {
		t.Errorf("gid %d", c.gid)
	}
	if c := es[9]; c.rmajor != 5 || c.rminor != 1 {
		t.Errorf("console %d:%d", c.rmajor, c.rminor)
	}
	// Equal inputs, equal archives.
	var again bytes.Buffer
	w = NewWriter(&again)
	w.MkdirAll("/usr/local/bin", 0o755, 0, 0)
	if !bytes.HasPrefix(buf.Bytes(), again.Bytes()) {
		t.Error("archive is not reproducible")
	}
}

func TestWriterRejects(t *testing.T) {
	w := NewWriter(&bytes.Buffer{})
	for _, err := range []error{
		w.File("/", 0o644, 0, 0, nil),
		w.File("TRAILER!!!", 0o644, 0, 0, nil),
		w.File("/x", 0o644, -1, 0, nil),
		w.Symlink("/l", "", 0, 0),
		w.CopyFile("/d", 0o644, 0, 0, t.TempDir()),
	} {
		if err == nil {
			t.Error("accepted")
		}
	}
}

// TestGNUCpioReadsIt checks the archive with GNU cpio, when installed.
func TestGNUCpioReadsIt(t *testing.T) {
	cpio, err := exec.LookPath("cpio")
	if err != nil {
		t.Fatal("no cpio to cross-check with (make deps installs it)")
	}
	var buf bytes.Buffer
	w := NewWriter(&buf)
	w.MkdirAll("/etc/fireactions", 0o700, 0, 0)
	w.File("/etc/fireactions/agent.json", 0o600, 0, 0, []byte(`{"a":1}`))
	w.Symlink("/sh", "busybox", 0, 0)
	w.Close()
	cmd := exec.Command(cpio, "-itv", "--quiet")
	cmd.Stdin = &buf
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("cpio: %v\n%s", err, out)
	}
	for _, want := range []string{"drwx------", "etc/fireactions\n", "-rw-------", "etc/fireactions/agent.json\n", "sh -> busybox\n"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("cpio -tv lacks %q:\n%s", want, out)
		}
	}
}

func trunc(b []byte) []byte {
	if len(b) > 20 {
		return b[:20]
	}
	return b
}
