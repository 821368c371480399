package qemu

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/vmm"
)

// TestConsoleLogIsCapped: a guest that writes its serial console far past
// the cap (a stand-in monitor writing 16 MiB to its stdout, where QEMU
// writes the serial console) leaves a log within the cap (1 MiB by
// default) that ends with the last bytes written.
func TestConsoleLogIsCapped(t *testing.T) {
	dir := t.TempDir()
	fake := filepath.Join(dir, "fake-qemu")
	script := "#!/bin/sh\nhead -c 16777216 /dev/zero | tr '\\0' 'x'\nprintf 'the last line the guest wrote\\n'\nexit 0\n"
	if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	s := spec
	s.ID, s.Dir, s.ConsoleLog, s.Initramfs = "capped", dir, filepath.Join(dir, "console.log"), filepath.Join(dir, "initramfs.cpio")
	if err := os.WriteFile(s.Initramfs, []byte("initramfs"), 0o600); err != nil {
		t.Fatal(err)
	}
	m, err := (&Driver{Binary: fake, Accel: AccelTCG}).Start(context.Background(), s)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-m.Done():
	case <-time.After(60 * time.Second):
		_ = m.Kill(context.Background())
		t.Fatal("stand-in monitor did not end")
	}
	const limit = 1 << 20
	want := []byte("the last line the guest wrote\n")
	var b []byte
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		b, _ = os.ReadFile(s.ConsoleLog)
		if bytes.HasSuffix(b, want) || time.Now().After(deadline) {
			break
		}
	}
	if len(b) > limit {
		t.Errorf("console log is %d bytes after the guest wrote 16 MiB, want at most %d", len(b), limit)
	}
	if !bytes.HasSuffix(b, want) {
		t.Errorf("console log does not end with the last bytes written: ends %q", tail(b, 64))
	}
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return fmt.Sprintf("%s", b)
}

var _ = vmm.Spec{}
