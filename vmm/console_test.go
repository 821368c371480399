package vmm

import (
	"bytes"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestConsoleWriterKeepsHeadAndTailWithinCap: whatever the sizes of the
// writes, the file is within the cap after every one of them, starts with
// the first bytes written and ends with the last.
func TestConsoleWriterKeepsHeadAndTailWithinCap(t *testing.T) {
	for _, limit := range []int64{4096, 64 << 10, 1 << 20} {
		t.Run(fmt.Sprint(limit), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "console.log")
			f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			w, err := NewConsoleWriter(f, limit)
			if err != nil {
				t.Fatal(err)
			}
			rng := rand.New(rand.NewSource(limit))
			var all []byte
			for i := 0; int64(len(all)) < 20*limit; i++ {
				p := make([]byte, rng.Intn(int(limit)))
				for j := range p {
					p[j] = byte('a' + rng.Intn(26))
				}
				if n, err := w.Write(p); err != nil || n != len(p) {
					t.Fatalf("write %d bytes: %d, %v", len(p), n, err)
				}
				all = append(all, p...)
				b, _ := os.ReadFile(path)
				if int64(len(b)) > limit {
					t.Fatalf("after %d bytes written the log is %d bytes, over its cap %d", len(all), len(b), limit)
				}
				head, tail := b[:min(len(b), int(limit/8))], b[len(b)-min(len(b), 1000, len(all)):]
				if !bytes.HasPrefix(all, head) || !bytes.HasSuffix(all, tail) {
					t.Fatalf("after %d bytes written the log does not start with the first and end with the last bytes", len(all))
				}
			}
			b, _ := os.ReadFile(path)
			if !bytes.Contains(b, []byte("bytes of console output dropped here")) {
				t.Error("no line says bytes were dropped")
			}
			// The kept copy of a log within the cap is the log.
			kept := filepath.Join(t.TempDir(), "kept.log")
			if err := CopyConsole(kept, path, limit); err != nil {
				t.Fatal(err)
			}
			if k, _ := os.ReadFile(kept); !bytes.Equal(k, b) {
				t.Error("copy of a log within its cap differs from it")
			}
		})
	}
}

// TestCopyConsoleBounded: a log over the cap (one written before the cap
// existed, or by another writer) is copied as its head and its end.
func TestCopyConsoleBounded(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "big.log")
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<20) // 16 MiB
	big = append(big, "the end\n"...)
	if err := os.WriteFile(src, big, 0o600); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, "kept.log")
	if err := CopyConsole(dst, src, 64<<10); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(dst)
	if len(b) > 64<<10 || !bytes.HasPrefix(big, b[:8<<10]) || !bytes.HasSuffix(b, []byte("the end\n")) {
		t.Errorf("kept copy: %d bytes (cap %d), head kept %v, ends %q", len(b), 64<<10, bytes.HasPrefix(big, b[:8<<10]), b[len(b)-16:])
	}
}

// TestOpenConsoleKeeperCapsAPipe: what a monitor writes into the console
// pipe reaches the log, capped, through the keeper process (this test
// binary re-executed), to its last byte once the writer is done.
func TestOpenConsoleKeeperCapsAPipe(t *testing.T) {
	path := filepath.Join(t.TempDir(), "console.log")
	w, err := OpenConsole(path, 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	chunk := bytes.Repeat([]byte("y"), 32<<10)
	for i := 0; i < 100; i++ {
		if _, err := w.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	w.WriteString("last\n")
	w.Close()
	var b []byte
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if b, _ = os.ReadFile(path); bytes.HasSuffix(b, []byte("ylast\n")) {
			break
		}
	}
	if len(b) > 64<<10 || !bytes.HasSuffix(b, []byte("ylast\n")) {
		t.Errorf("log of %d bytes (cap %d) ends %q", len(b), 64<<10, b[max(0, len(b)-16):])
	}
}
