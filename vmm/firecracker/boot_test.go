package firecracker

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/internal/hosttest"
	"github.com/nixos-fireactions/nixos-fireactions/vmm"
)

// bootSpec is a real guest for the double to boot: the host's kernel and
// an initramfs whose init says it is up and ends the VM.
func bootSpec(t *testing.T, id, mode string) vmm.Spec {
	t.Helper()
	dir := t.TempDir()
	s := vmm.Spec{
		ID: id, Dir: dir, Kernel: hostKernel(t), Initramfs: filepath.Join(dir, "initramfs.cpio"),
		VCPUs: 1, MemoryMiB: 256, TAP: testTAP(t), MAC: "02:00:00:00:00:02",
		ConsoleLog: filepath.Join(dir, "console.log"), Cmdline: "guestinit=" + mode,
	}
	guestInitramfs(t, s.Initramfs)
	// A test that fails before its VM ends (a slow boot under load)
	// leaves no VMM behind for the tests after it.
	killLeftVMMs(t, id)
	return s
}

// TestGuestResetEndsTheVMM boots a guest through the driver and the
// double: the guest's serial console reaches the console log (Firecracker
// writes it to its stdout), the guest's reset (what the agent does at the
// end of a job) ends the VMM with no error, and every request of a real
// boot was valid.
func TestGuestResetEndsTheVMM(t *testing.T) {
	hosttest.RequireRoot(t, "the guest's TAP")
	b := buildDouble(t)
	spec := bootSpec(t, "boot1", "reset")
	record := filepath.Join(spec.Dir, "record.jsonl")
	t.Setenv("FCDOUBLE_RECORD", record)

	m, err := (&Driver{Binary: b.Firecracker}).Start(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	waitDone(t, m, 90*time.Second)
	if m.Err() != nil {
		t.Fatalf("the VMM ended with %v after the guest's reset", m.Err())
	}
	console, _ := os.ReadFile(spec.ConsoleLog)
	if !strings.Contains(string(console), `guestinit: up, mode="reset"`) {
		t.Fatalf("the guest's console is not in the console log:\n%s", console)
	}
	if !strings.Contains(string(console), "Linux version") {
		t.Errorf("no kernel messages in the console log (console=ttyS0 lost?)")
	}
	assertAllAccepted(t, readRecord(t, record), spec, false)
	if !processGone(spec.ID) {
		t.Error("a process of the VM is still running")
	}
}

// TestInitramfsIsEmptiedOnceTheVMMHasReadIt: Firecracker reads the
// initramfs whole into guest memory at InstanceStart and never again, but
// keeps it open: once Start returns, the driver has emptied it (its disk
// is free although the VMM holds it open), the caller removes its name,
// and the guest still boots its init from it. Real Firecracker and the
// double read it at the same moment: after InstanceStart no process of
// the VM maps the file (the double's QEMU boots a copy the double read at
// InstanceStart, as Firecracker reads it into guest memory), so neither
// boots an emptied file.
func TestInitramfsIsEmptiedOnceTheVMMHasReadIt(t *testing.T) {
	hosttest.RequireRoot(t, "the guest's TAP")
	b := buildDouble(t)
	spec := bootSpec(t, "boot3", "reset")
	spec.Cmdline += " guestsleep=2"
	before := diskOf(t, spec.Initramfs)
	if before == 0 {
		t.Fatal("positive control: the initramfs takes no disk before Start")
	}
	var st syscall.Stat_t
	if err := syscall.Stat(spec.Initramfs, &st); err != nil {
		t.Fatal(err)
	}
	m, err := (&Driver{Binary: b.Firecracker}).Start(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	qemus := qemuOf(spec.ID)
	if len(qemus) == 0 {
		t.Fatal("positive control: no QEMU of the VM to look at")
	}
	for _, p := range qemus {
		maps, _ := os.ReadFile(filepath.Join(filepath.Dir(p), "maps"))
		for _, l := range strings.Split(string(maps), "\n") {
			if f := strings.Fields(l); len(f) >= 6 && f[4] == strconv.FormatUint(st.Ino, 10) && strings.HasPrefix(f[5], spec.Dir) {
				t.Errorf("after InstanceStart the VM's QEMU maps the initramfs, to read it later: %s", l)
			}
		}
	}
	after := diskOf(t, spec.Initramfs)
	if err := os.Remove(spec.Initramfs); err != nil {
		t.Fatal(err)
	}
	t.Logf("FIGURE initramfs disk while the VM runs: %d bytes before Start, %d after (du of the file, st_blocks)", before, after)
	if after != 0 {
		t.Errorf("the initramfs takes %d bytes of disk after Start, want 0", after)
	}
	waitDone(t, m, 90*time.Second)
	console, _ := os.ReadFile(spec.ConsoleLog)
	if m.Err() != nil || !strings.Contains(string(console), `guestinit: up, mode="reset"`) {
		t.Fatalf("the guest did not boot its emptied, removed initramfs (exit %v); console:\n%s", m.Err(), console)
	}
}

// diskOf is the disk the file at path takes, in bytes (its st_blocks).
func diskOf(t *testing.T, path string) int64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

// TestGuestPowerOffDoesNotEndTheVMM: like Firecracker, which has no ACPI
// power-off, the double keeps running when the guest powers off instead
// of resetting; only a kill ends it. The guest agent resets for this
// reason.
func TestGuestPowerOffDoesNotEndTheVMM(t *testing.T) {
	hosttest.RequireRoot(t, "the guest's TAP")
	b := buildDouble(t)
	spec := bootSpec(t, "boot2", "poweroff")
	m, err := (&Driver{Binary: b.Firecracker}).Start(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 90*time.Second, "the guest to power off", func() bool {
		console, _ := os.ReadFile(spec.ConsoleLog)
		return strings.Contains(string(console), "reboot: Power down")
	})
	select {
	case <-m.Done():
		t.Fatalf("the VMM ended (%v) when the guest powered off; Firecracker runs on", m.Err())
	case <-time.After(2 * time.Second):
	}
	// A restarted orchestrator adopts it and kills it: the signal reaches
	// the VMM's process alone, and its QEMU must not outlive it.
	a, err := (&Driver{Binary: b.Firecracker}).Adopt(spec.ID, m.PID())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.Kill(ctx); err != nil {
		t.Fatal(err)
	}
	if a.Err() != vmm.ErrKilled {
		t.Errorf("Err = %v, want ErrKilled", a.Err())
	}
	<-m.Done()
	waitFor(t, 5*time.Second, "QEMU to be gone", func() bool { return len(qemuOf(spec.ID)) == 0 })
}

// qemuOf lists the pids of QEMUs booted for VM id.
func qemuOf(id string) []string {
	var out []string
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err == nil && strings.Contains(string(b), "qemu") && strings.Contains(string(b), "fireactions-"+id+"\x00") {
			out = append(out, p)
		}
	}
	return out
}
