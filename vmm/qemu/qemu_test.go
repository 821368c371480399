package qemu

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/vmm"
)

var spec = vmm.Spec{ID: "abc", Kernel: "/k", Initramfs: "/i", VCPUs: 2, MemoryMiB: 512, TAP: "faabc", MAC: "02:00:00:00:00:01", Cmdline: "extra=1"}

func argValue(args []string, flag string) string {
	for i := 0; i+1 < len(args); i++ {
		if args[i] == flag {
			return args[i+1]
		}
	}
	return ""
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
				"-device": "virtio-net-device,netdev=n0,mac=02:00:00:00:00:01",
			}
			for flag, want := range checks {
				if got := argValue(args, flag); got != want {
					t.Errorf("%s = %q, want %q", flag, got, want)
				}
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

// TestMachineLifecycle runs a stand-in monitor (a shell) to check exit
// detection, Kill, and that IsOurs tells our process from others.
func TestMachineLifecycle(t *testing.T) {
	dir := t.TempDir()
	fake := filepath.Join(dir, "fake-qemu")
	if err := os.WriteFile(fake, []byte("#!/bin/sh\nsleep 30\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	s := spec
	s.Dir, s.ConsoleLog = dir, filepath.Join(dir, "console.log")
	m, err := (&Driver{Binary: fake, Accel: AccelTCG}).Start(context.Background(), s)
	if err != nil {
		t.Fatal(err)
	}
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
