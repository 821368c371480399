package qemu

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/vmm/kvmprobe"
)

// fakeQEMU is a script standing in for QEMU's binary.
func fakeQEMU(t *testing.T, script string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "qemu")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+script), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// A QEMU that greets and then aborts while it makes its vCPU (what a
// KVM refusing a feature MSR does to it) has set up no vCPU, and the
// error ends with what it printed; real QEMU under TCG (the control)
// sets one up.
func TestSetsUpVCPU(t *testing.T) {
	ctx := context.Background()
	aborts := fakeQEMU(t, `echo '{"QMP": {"version": {}, "capabilities": []}}'
echo 'qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69' >&2
echo "qemu-system-x86_64: kvm.c:3183: kvm_buf_set_msrs: Assertion failed." >&2
exit 134
`)
	err := setsUpVCPU(ctx, aborts, AccelKVM)
	if err == nil || !strings.Contains(err.Error(), "ended before its machine was made: qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69") {
		t.Errorf("a QEMU aborting at its vCPU: %v; want its error named", err)
	}
	silent := fakeQEMU(t, `echo '{"QMP": {}}'; exec sleep 60`)
	ctx2, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	if err := setsUpVCPU(ctx2, silent, AccelKVM); err == nil {
		t.Error("a QEMU that never answers: no error")
	}
	if err := setsUpVCPU(ctx, "qemu-system-x86_64", AccelTCG); err != nil {
		t.Errorf("real QEMU under TCG: %v", err)
	}
}

// The vCPU probe never calls usable a KVM on which QEMU cannot set up
// a vCPU (this machine's paravirtual KVM runs the probe's code, then
// refuses MSR 0x10a, on which QEMU aborts), so doctor says so too; and
// DetectAccel picks KVM exactly when the probe's code ran and QEMU set
// up a vCPU.
func TestKVMProbeAgreesWithQEMU(t *testing.T) {
	ctx := context.Background()
	pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	probe := kvmprobe.Probe(pctx, "/dev/kvm")
	qemuErr := setsUpVCPU(ctx, "qemu-system-x86_64", AccelKVM)
	if probe.Usable && qemuErr != nil {
		t.Errorf("the probe says %v; QEMU on KVM: %v", probe, qemuErr)
	}
	accel, why := DetectAccel(ctx, "qemu-system-x86_64", "/dev/kvm")
	if want := qemuErr == nil && (probe.Usable || probe.RefusedMSR); (accel == AccelKVM) != want {
		t.Errorf("DetectAccel: %s (%s); probe %v, QEMU on KVM: %v", accel, why, probe, qemuErr)
	}
	t.Logf("/dev/kvm: %v; QEMU on KVM: %v; DetectAccel: %s", probe, qemuErr, accel)
}

// KVM is chosen when the probe ran its code and QEMU set up a vCPU, or
// when the probe failed only on a feature MSR and QEMU set one up anyway
// (QEMU's own try decides what the probe cannot); every other case is
// TCG, and a probe that hung or could not open the device asks no QEMU.
func TestDecideAccel(t *testing.T) {
	usable := kvmprobe.Result{Usable: true}
	refused := kvmprobe.Result{Reason: "the test vCPU refused feature MSR 0x10a", RefusedMSR: true}
	hung := kvmprobe.Result{Reason: "the test vCPU did not finish"}
	aborted := errors.New("failed to set MSR 0x10a")
	for _, tc := range []struct {
		name     string
		probe    kvmprobe.Result
		qemu     error
		want     Accel
		asksQEMU bool
	}{
		{"probe ran, QEMU set up", usable, nil, AccelKVM, true},
		{"probe ran, QEMU aborted", usable, aborted, AccelTCG, true},
		{"MSR refused, QEMU set up", refused, nil, AccelKVM, true},
		{"MSR refused, QEMU aborted", refused, aborted, AccelTCG, true},
		{"probe hung", hung, nil, AccelTCG, false},
	} {
		asked := false
		got, why := decideAccel(tc.probe, func() error { asked = true; return tc.qemu })
		if got != tc.want || asked != tc.asksQEMU || why == "" {
			t.Errorf("%s: %s (%q), QEMU asked %v; want %s, asked %v", tc.name, got, why, asked, tc.want, tc.asksQEMU)
		}
	}
}
