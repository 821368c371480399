package qemu

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/vmm"
)

// fakeBzImage is a kernel file with the boot protocol's header: setup
// sectors (setup_sects + 1 sectors of 512 bytes) and then a payload.
func fakeBzImage(setupSects byte, payload int) []byte {
	b := make([]byte, 512*(int(max(setupSects, 4))+1)+payload)
	for i := range b {
		b[i] = byte(i*7 + 3)
	}
	b[setupSectsAt] = setupSects
	copy(b[bootHeaderMagicAt:], bootHeaderMagic)
	return b
}

// startRecording starts spec under a stand-in QEMU that writes its
// arguments, one a line, and what it reads from its fd 3 into spec.Dir.
func startRecording(t *testing.T, spec vmm.Spec) (args []string, fd3 []byte) {
	t.Helper()
	fake := filepath.Join(spec.Dir, "fake-qemu")
	script := "#!/bin/sh\nprintf '%s\\n' \"$@\" > args\ncat /dev/fd/3 > fd3\n: > started\nsleep 30\n"
	if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	m, err := (&Driver{Binary: fake, Accel: AccelTCG}).Start(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Kill(context.Background()) })
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if _, err := os.Stat(filepath.Join(spec.Dir, "started")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("stand-in QEMU did not start")
		}
	}
	a, _ := os.ReadFile(filepath.Join(spec.Dir, "args"))
	fd3, _ = os.ReadFile(filepath.Join(spec.Dir, "fd3"))
	return strings.Split(strings.TrimSpace(string(a)), "\n"), fd3
}

// TestARestoresQEMUReadsItsKernelsBootHeaderOnly: a restored guest runs
// from its template's memory, so its QEMU gets the kernel's boot sector
// and setup sectors (all it lays the machine out by) as its fd 3, and no
// initramfs; a cold boot of the same spec gets the kernel by path and
// the initramfs as its fd 3. A kernel without the boot protocol's header
// is given whole.
func TestARestoresQEMUReadsItsKernelsBootHeaderOnly(t *testing.T) {
	for _, c := range []struct {
		name   string
		kernel []byte
		header int // bytes of it a restore's QEMU reads
	}{
		{"bzImage", fakeBzImage(3, 64<<10), 4 * 512},
		{"bzImage with setup_sects 0", fakeBzImage(0, 64<<10), 5 * 512},
		{"no boot header", bytes.Repeat([]byte("\x7fELF"), 4096), 4 * 4096},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			s := spec
			s.Kernel = filepath.Join(dir, "vmlinuz")
			s.Initramfs = filepath.Join(dir, "initramfs.cpio")
			s.Identity, s.MemoryFile = filepath.Join(dir, "id.sock"), filepath.Join(dir, "memory")
			for name, b := range map[string][]byte{s.Kernel: c.kernel, s.Initramfs: []byte("the pool's initramfs")} {
				if err := os.WriteFile(name, b, 0o600); err != nil {
					t.Fatal(err)
				}
			}

			cold := s
			cold.Dir, cold.ConsoleLog = filepath.Join(dir, "cold"), filepath.Join(dir, "cold.log")
			cold.MemoryFile = filepath.Join(dir, "template-memory")
			os.Mkdir(cold.Dir, 0o700)
			args, fd3 := startRecording(t, cold)
			if argValue(args, "-kernel") != s.Kernel || argValue(args, "-initrd") != initrdFD || string(fd3) != "the pool's initramfs" {
				t.Fatalf("cold boot: -kernel %q, -initrd %q, fd 3 %q; want the kernel's path and the initramfs on fd 3",
					argValue(args, "-kernel"), argValue(args, "-initrd"), fd3)
			}

			restore := s
			restore.Dir, restore.ConsoleLog = filepath.Join(dir, "restore"), filepath.Join(dir, "restore.log")
			restore.Restore = filepath.Join(dir, "state")
			os.Mkdir(restore.Dir, 0o700)
			if err := os.WriteFile(restore.Restore, []byte("state"), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(restore.MemoryFile, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(restore.MemoryFile, int64(restore.MemoryMiB)<<20); err != nil {
				t.Fatal(err)
			}
			args, fd3 = startRecording(t, restore)
			if got := argValue(args, "-kernel"); got != firstFD {
				t.Errorf("restore: -kernel %q, want %s", got, firstFD)
			}
			if slices.Contains(args, "-initrd") {
				t.Errorf("restore: -initrd %q given", argValue(args, "-initrd"))
			}
			if !bytes.Equal(fd3, c.kernel[:c.header]) {
				t.Errorf("restore: fd 3 holds %d bytes, want the kernel's first %d", len(fd3), c.header)
			}
		})
	}
}
