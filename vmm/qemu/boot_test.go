package qemu

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/initramfs"
	"github.com/nixos-fireactions/nixos-fireactions/vmm"
)

// TestInitramfsRemovedOnceStartReturnsStillBoots: the vmm seam's promise
// (the monitor holds the initramfs when Start returns) holds for QEMU,
// which maps it while it sets the machine up, after Start has returned,
// and serves it to the guest's firmware: the file removed at once, as the
// pool removes it, the guest still boots its init from it. Removed, the
// file still takes its disk (QEMU maps it) until the machine releases it
// (vmm.BootReleaser) once the guest runs; after that the guest goes on
// and ends with a reset, as after a job.
func TestInitramfsRemovedOnceStartReturnsStillBoots(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root: the guest's TAP (make test runs as root)")
	}
	dir := t.TempDir()
	s := vmm.Spec{
		ID: fmt.Sprintf("qboot%d", os.Getpid()), Dir: dir, Kernel: hostKernel(t),
		Initramfs: filepath.Join(dir, "initramfs.cpio"), VCPUs: 1, MemoryMiB: 256,
		TAP: testTAP(t), MAC: "02:00:00:00:00:03", ConsoleLog: filepath.Join(dir, "console.log"),
		Cmdline: "guestinit=reset guestsleep=3",
	}
	guestInitramfs(t, s.Initramfs)
	var st syscall.Stat_t
	if err := syscall.Stat(s.Initramfs, &st); err != nil {
		t.Fatal(err)
	}
	m, err := (&Driver{Binary: "qemu-system-x86_64", Accel: AccelTCG}).Start(context.Background(), s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Kill(context.Background()) })
	if err := os.Remove(s.Initramfs); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(120 * time.Second); !strings.Contains(readConsole(s.ConsoleLog), "guestinit: up"); time.Sleep(50 * time.Millisecond) {
		select {
		case <-m.Done():
			t.Fatalf("QEMU ended (%v) before the guest came up; console:\n%s", m.Err(), readConsole(s.ConsoleLog))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the guest did not come up within 120s; console:\n%s", readConsole(s.ConsoleLog))
		}
	}
	held := heldDisk(t, m.PID(), st.Ino)
	if held == 0 {
		t.Fatal("positive control: the removed initramfs takes no disk while QEMU runs, before its release")
	}
	r, ok := m.(vmm.BootReleaser)
	if !ok {
		t.Fatal("QEMU's machine is not a vmm.BootReleaser")
	}
	if err := r.ReleaseBoot(); err != nil {
		t.Fatal(err)
	}
	released := heldDisk(t, m.PID(), st.Ino)
	t.Logf("FIGURE disk of a removed initramfs while its QEMU runs: %d bytes before ReleaseBoot, %d after (st_blocks through /proc/PID/fd)", held, released)
	if released != 0 {
		t.Errorf("the released initramfs still takes %d bytes of disk", released)
	}
	select {
	case <-m.Done():
	case <-time.After(120 * time.Second):
		t.Fatalf("the guest did not end within 120s; console:\n%s", readConsole(s.ConsoleLog))
	}
	console := readConsole(s.ConsoleLog)
	if m.Err() != nil || !strings.Contains(console, `guestinit: up, mode="reset"`) {
		t.Fatalf("the guest did not boot from its initramfs removed after Start (exit: %v); console:\n%s", m.Err(), console)
	}
}

// heldDisk is the disk (st_blocks, in bytes) of inode ino as QEMU pid
// holds it open; the test fails if it holds no such file.
func heldDisk(t *testing.T, pid int, ino uint64) int64 {
	t.Helper()
	fds, _ := filepath.Glob(fmt.Sprintf("/proc/%d/fd/*", pid))
	for _, fd := range fds {
		var st syscall.Stat_t
		if syscall.Stat(fd, &st) == nil && st.Ino == ino {
			return st.Blocks * 512
		}
	}
	t.Fatalf("QEMU (pid %d) does not hold the initramfs open", pid)
	return 0
}

func readConsole(p string) string {
	b, _ := os.ReadFile(p)
	return string(b)
}

// hostKernel is the Debian cloud kernel the test guest boots.
func hostKernel(t testing.TB) string {
	t.Helper()
	ks, _ := filepath.Glob("/boot/vmlinuz-*-cloud-amd64")
	if len(ks) == 0 {
		t.Fatal("no /boot/vmlinuz-*-cloud-amd64 to boot (make test installs linux-image-cloud-amd64)")
	}
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Fatal("no qemu-system-x86_64 (make deps installs it)")
	}
	return ks[len(ks)-1]
}

// guestInitramfs writes an initramfs whose /init is the Firecracker
// driver's test guest (vmm/firecracker/testdata/guestinit): it says it is
// up on the console, then resets.
func guestInitramfs(t *testing.T, dst string) {
	t.Helper()
	data, err := os.ReadFile(buildGuest(t, "../firecracker/testdata/guestinit"))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	w := initramfs.NewWriter(&buf)
	if err := w.File("init", 0o755, 0, 0, data); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
}

// buildGuest builds the static test guest program pkg and returns its path.
func buildGuest(t testing.TB, pkg string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "init")
	cmd := exec.Command("go", "build", "-o", bin, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the guest init %s: %v\n%s", pkg, err, out)
	}
	return bin
}

// testTAP creates a TAP for the test and removes it after.
func testTAP(t *testing.T) string { return tap(t, "t") }
