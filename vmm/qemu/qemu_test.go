package qemu

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/vmm"
)

var spec = vmm.Spec{ID: "abc", Kernel: "/k", Initramfs: "/i", VCPUs: 2, MemoryMiB: 512, TAP: "faabc", MAC: "02:00:00:00:00:01", Cmdline: "extra=1"}

func argValue(args []string, flag string) string {
	if v := argValues(args, flag); len(v) > 0 {
		return v[0]
	}
	return ""
}

func argValues(args []string, flag string) []string {
	var out []string
	for i := 0; i+1 < len(args); i++ {
		if args[i] == flag {
			out = append(out, args[i+1])
		}
	}
	return out
}

func TestArgs(t *testing.T) {
	tests := []struct {
		accel   Accel
		cpu     string
		tscHint bool
	}{
		{AccelTCG, "max", true},
		{AccelKVM, "host", false},
	}
	for _, tc := range tests {
		t.Run(string(tc.accel), func(t *testing.T) {
			args := (&Driver{Binary: "qemu", Accel: tc.accel}).Args(spec)
			checks := map[string]string{
				"-name": "fireactions-abc", "-accel": string(tc.accel), "-cpu": tc.cpu, "-smp": "2", "-m": "512",
				"-kernel": "/k", "-initrd": "/i",
				"-netdev": "tap,id=n0,ifname=faabc,script=no,downscript=no",
			}
			for flag, want := range checks {
				if got := argValue(args, flag); got != want {
					t.Errorf("%s = %q, want %q", flag, got, want)
				}
			}
			// The NIC, and the i8042 whose reset line ends QEMU when the
			// guest restarts (reboot=k with -no-reboot).
			devices := strings.Join(argValues(args, "-device"), " ")
			if devices != "i8042 virtio-net-device,netdev=n0,mac=02:00:00:00:00:01" {
				t.Errorf("-device values %q", devices)
			}
			cmdline := argValue(args, "-append")
			if strings.Contains(cmdline, "tsc_early_khz") != tc.tscHint {
				t.Errorf("cmdline %q: TSC hint present = %v, want %v", cmdline, !tc.tscHint, tc.tscHint)
			}
			if !strings.HasSuffix(cmdline, " extra=1") || !strings.Contains(cmdline, "console=ttyS0") {
				t.Errorf("cmdline %q", cmdline)
			}
			if !strings.HasPrefix(argValue(args, "-M"), "microvm") {
				t.Error("not a microvm machine")
			}
		})
	}
}

func TestStartRejectsIncompleteSpec(t *testing.T) {
	d := &Driver{Binary: "qemu", Accel: AccelTCG}
	if _, err := d.Start(context.Background(), vmm.Spec{ID: "x"}); err == nil {
		t.Fatal("incomplete spec started")
	}
}

// startFake starts a stand-in monitor (a shell script; "exit 0" keeps the
// shell from exec-ing sleep, which would replace the command line recovery
// recognises the monitor by) for spec's VM in dir, and returns once it
// runs: right after Start the process may still be in exec, its
// /proc/PID/cmdline still empty, so the script says it has started by
// creating a file, and the test waits for that, not for a time.
func startFake(t *testing.T, dir string) (*Driver, vmm.Spec, vmm.Machine) {
	t.Helper()
	fake := filepath.Join(dir, "fake-qemu")
	if err := os.WriteFile(fake, []byte("#!/bin/sh\n: > started\nsleep 30\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	s := spec
	s.Dir, s.ConsoleLog, s.Initramfs = dir, filepath.Join(dir, "console.log"), filepath.Join(dir, "initramfs.cpio")
	if err := os.WriteFile(s.Initramfs, []byte("initramfs"), 0o600); err != nil {
		t.Fatal(err)
	}
	d := &Driver{Binary: fake, Accel: AccelTCG}
	m, err := d.Start(context.Background(), s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Kill(context.Background()) })
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(dir, "started")); err == nil {
			return d, s, m
		}
		select {
		case <-m.Done():
			t.Fatalf("stand-in monitor exited before it started: %v", m.Err())
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("stand-in monitor did not start")
		}
	}
}

// TestMachineLifecycle runs a stand-in monitor (a shell) to check exit
// detection, Kill, and that IsOurs tells our process from others.
func TestMachineLifecycle(t *testing.T) {
	dir := t.TempDir()
	_, s, m := startFake(t, dir)
	if !IsOurs(m.PID(), "abc") {
		t.Error("the monitor started for vm abc is not recognised")
	}
	if IsOurs(m.PID(), "other") || IsOurs(os.Getpid(), "abc") {
		t.Error("a process of another VM, or not a monitor, taken for vm abc's")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := m.Kill(ctx); err != nil {
		t.Fatal(err)
	}
	<-m.Done()
	if m.Err() != vmm.ErrKilled {
		t.Fatalf("Err = %v, want ErrKilled", m.Err())
	}

	exitNow := filepath.Join(dir, "exit-qemu")
	os.WriteFile(exitNow, []byte("#!/bin/sh\nexit 0\n"), 0o755)
	m2, err := (&Driver{Binary: exitNow, Accel: AccelTCG}).Start(context.Background(), s)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-m2.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("exit not detected")
	}
	if m2.Err() != nil {
		t.Fatalf("clean exit reported as %v", m2.Err())
	}
}

// TestStartedCommandLineNamesTheVMDirectory: QEMU gets its initramfs as
// an open file, not by path, yet its command line still shows the VM's
// directory (its pid file there), by which ps and the e2e tests tell
// whose files a QEMU has.
func TestStartedCommandLineNamesTheVMDirectory(t *testing.T) {
	dir := t.TempDir()
	_, s, m := startFake(t, dir)
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", m.PID()))
	if err != nil {
		t.Fatal(err)
	}
	args := strings.Split(string(b), "\x00")
	if got := argValue(args, "-initrd"); got != initrdFD {
		t.Errorf("-initrd %q, want the open file %s", got, initrdFD)
	}
	if got := argValue(args, "-pidfile"); got != filepath.Join(s.Dir, "qemu.pid") {
		t.Errorf("-pidfile %q, want the VM directory's qemu.pid", got)
	}
}

// TestCommandLineWithoutOptionalDevices: a spec without an initramfs or a
// TAP boots without them, with the kernel command line exactly as given.
func TestCommandLineWithoutOptionalDevices(t *testing.T) {
	args := (&Driver{Binary: "qemu", Accel: AccelTCG}).CommandLine(vmm.Spec{ID: "x", Kernel: "/k", VCPUs: 1, MemoryMiB: 128}, "console=ttyS0 only")
	if got := argValue(args, "-append"); got != "console=ttyS0 only" {
		t.Errorf("-append = %q", got)
	}
	for _, flag := range []string{"-initrd", "-netdev"} {
		if v := argValues(args, flag); len(v) != 0 {
			t.Errorf("%s %v without it in the spec", flag, v)
		}
	}
	if got := (&Driver{Accel: AccelKVM}).AccelCmdline(); got != "" {
		t.Errorf("KVM accel command line %q, want none", got)
	}
}

// TestAdopt takes over a running stand-in monitor as a restarted
// orchestrator would, refuses a pid that is another VM's, and kills it.
func TestAdopt(t *testing.T) {
	d, _, started := startFake(t, t.TempDir())
	if _, err := d.Adopt("other", started.PID()); err == nil {
		t.Fatal("vm abc's monitor adopted as vm other's")
	}
	m, err := d.Adopt("abc", started.PID())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := m.Kill(ctx); err != nil {
		t.Fatal(err)
	}
	<-started.Done()
	if m.Err() != vmm.ErrKilled {
		t.Fatalf("Err = %v, want ErrKilled", m.Err())
	}
}

// TestFindMonitor finds a running monitor by its VM's id alone, as
// recovery does for a VM whose record holds no PID.
func TestFindMonitor(t *testing.T) {
	d, _, m := startFake(t, t.TempDir())
	if pid, err := d.FindMonitor("abc"); err != nil || pid != m.PID() {
		t.Fatalf("FindMonitor(abc) = %d, %v; want %d", pid, err, m.PID())
	}
	if pid, err := d.FindMonitor("other"); err != nil || pid != 0 {
		t.Fatalf("FindMonitor(other) = %d, %v; want none", pid, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := m.Kill(ctx); err != nil {
		t.Fatal(err)
	}
	if pid, err := d.FindMonitor("abc"); err != nil || pid != 0 {
		t.Fatalf("FindMonitor(abc) after its exit = %d, %v; want none", pid, err)
	}
}

// TestTheBoardLetsTheHostMergeNoGuestMemory: with KSM on, a host that
// merged equal pages of two VMs would let one time the other's writes (a
// cross-VM side channel): every board, a cold boot's, a template's and a
// restore's, has mem-merge=off, and a RAM file's memory backend
// merge=off.
func TestTheBoardLetsTheHostMergeNoGuestMemory(t *testing.T) {
	d := &Driver{Binary: "qemu", Accel: AccelTCG}
	template, restore := spec, spec
	template.MemoryFile = "/t/memory"
	restore.MemoryFile, restore.Restore = "/t/memory", "/t/state"
	for name, s := range map[string]vmm.Spec{"cold boot": spec, "template": template, "restore": restore} {
		args := d.Args(s)
		board := strings.Split(argValue(args, "-M"), ",")
		if !slices.Contains(board, "mem-merge=off") {
			t.Errorf("%s: -M %q lacks mem-merge=off", name, strings.Join(board, ","))
		}
		if s.MemoryFile == "" {
			continue
		}
		// The RAM file's backend says so itself, not by inheritance.
		var backend []string
		for _, o := range argValues(args, "-object") {
			if strings.HasPrefix(o, "memory-backend-file,") {
				backend = strings.Split(o, ",")
			}
		}
		if !slices.Contains(backend, "merge=off") {
			t.Errorf("%s: the memory backend %q lacks merge=off", name, strings.Join(backend, ","))
		}
	}
}
