package firecracker

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/internal/hosttest"
	"github.com/nixos-fireactions/nixos-fireactions/vmm"
)

// TestFindMonitor finds a running VMM by its VM's id alone, jailed (the
// jailer execs firecracker in its own process) or not, as recovery does
// for a VM whose record holds no PID; another VM's id, a process that
// merely names the id, and a VMM that has exited are not found.
func TestFindMonitor(t *testing.T) {
	hosttest.RequireRoot(t, "the jailer chowns, mknods and drops privileges; TAPs")
	b := buildDouble(t)
	base := jailBase(t)
	_, mounts := fakeCgroups(t, base)
	t.Setenv("FCDOUBLE_PROC_MOUNTS", mounts)
	t.Setenv("FCDOUBLE_BOOT", "none")
	tap := testTAP(t)
	jailer := &Jailer{Binary: b.Jailer, ChrootBaseDir: base, UID: jailUID, GID: jailGID, ParentCgroup: "fireactions", MountTable: mounts}

	// Not a VMM, though its command line names the id.
	impostor := exec.Command("sh", "-c", "sleep 60; :", "firecracker", "--id", "found-jailed")
	if err := impostor.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = impostor.Process.Kill(); _ = impostor.Wait() })

	for _, c := range []struct {
		id     string
		jailer *Jailer
	}{{"found-jailed", jailer}, {"found-unjailed", nil}} {
		t.Run(c.id, func(t *testing.T) {
			d := &Driver{Binary: b.Firecracker, Jailer: c.jailer}
			killLeftVMMs(t, c.id)
			dir := t.TempDir()
			spec := testSpec
			spec.ID, spec.Dir, spec.ConsoleLog, spec.TAP = c.id, dir, filepath.Join(dir, "console.log"), tap
			spec.Kernel, spec.Initramfs = filepath.Join(dir, "kernel"), filepath.Join(dir, "initramfs")
			os.WriteFile(spec.Kernel, []byte("k"), 0o644)
			os.WriteFile(spec.Initramfs, []byte("i"), 0o600)
			m, err := d.Start(context.Background(), spec)
			if err != nil {
				t.Fatal(err)
			}
			// A new driver, as after a restart.
			// Recovery asks the hypervisor whether it can find monitors.
			d2, ok := vmm.Hypervisor(&Driver{Binary: b.Firecracker, Jailer: c.jailer}).(vmm.Finder)
			if !ok {
				t.Fatal("the Firecracker driver cannot find a monitor by its VM's id (vmm.Finder)")
			}
			if pid, err := d2.FindMonitor(c.id); err != nil || pid != m.PID() {
				t.Errorf("FindMonitor(%s) = %d, %v; want %d", c.id, pid, err, m.PID())
			}
			if pid, err := d2.FindMonitor("other"); err != nil || pid != 0 {
				t.Errorf("FindMonitor(other) = %d, %v; want none", pid, err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := m.Kill(ctx); err != nil {
				t.Fatal(err)
			}
			if pid, err := d2.FindMonitor(c.id); err != nil || pid != 0 {
				t.Errorf("FindMonitor(%s) after its exit = %d, %v; want none", c.id, pid, err)
			}
		})
	}
}
