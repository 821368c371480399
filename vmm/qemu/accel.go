package qemu

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/vmm/kvmprobe"
)

// DetectAccel returns KVM when device really runs a guest and binary
// sets up a vCPU on it as the driver asks for one, TCG otherwise, with
// the reason. Both checks matter: a KVM that runs the probe's code can
// still refuse a register QEMU writes to every vCPU it makes (seen: a
// paravirtual KVM refusing MSR 0x10a, on which QEMU aborts), and then
// every VM would fail to start. A probe that failed only on such a
// register leaves the verdict to QEMU.
func DetectAccel(ctx context.Context, binary, device string) (Accel, string) {
	pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	r := kvmprobe.Probe(pctx, device)
	cancel()
	return decideAccel(r, func() error { return setsUpVCPU(ctx, binary, AccelKVM) })
}

// decideAccel is DetectAccel's verdict from the probe's result r and
// QEMU's own try, which it makes only when r leaves KVM possible.
func decideAccel(r kvmprobe.Result, qemuTry func() error) (Accel, string) {
	if !r.Usable && !r.RefusedMSR {
		return AccelTCG, r.String()
	}
	if err := qemuTry(); err != nil {
		if r.RefusedMSR {
			return AccelTCG, r.String() + "; and " + err.Error()
		}
		return AccelTCG, "not usable by QEMU: " + err.Error()
	}
	if r.RefusedMSR {
		return AccelKVM, "usable: a test vCPU ran guest code and QEMU set up one on it (KVM refused a feature MSR QEMU does not write here: " + r.Reason + ")"
	}
	return AccelKVM, r.String() + ", and QEMU set up a vCPU on it"
}

// setsUpVCPU starts binary with the driver's board and CPU under accel,
// stopped (-S), and asks for its run state over QMP on stdio: QEMU
// answers once its machine is made, the vCPU's registers set. An exit
// before the answer is the error, with the end of what QEMU printed.
func setsUpVCPU(ctx context.Context, binary string, accel Accel) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	d := Driver{Accel: accel}
	cmd := exec.CommandContext(ctx, binary, "-M", "microvm,acpi=on", "-accel", string(accel), "-cpu", d.cpu(), "-m", "64",
		"-nodefaults", "-no-user-config", "-display", "none", "-S", "-serial", "none", "-qmp", "stdio")
	cmd.Stdin = strings.NewReader(`{"execute":"qmp_capabilities"}` + "\n" + `{"execute":"query-status"}` + "\n")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.WaitDelay = time.Second // a child holding stderr open ends no wait
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", binary, err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	r := bufio.NewReader(io.LimitReader(out, 1<<20))
	for answers := 0; answers < 2; {
		line, err := r.ReadBytes('\n')
		if err != nil {
			_ = cmd.Wait()
			if ctx.Err() != nil {
				return fmt.Errorf("%s -accel %s: no answer within 10s", binary, accel)
			}
			return fmt.Errorf("%s -accel %s ended before its machine was made: %s", binary, accel, lastLines(stderr.String(), 2))
		}
		var m qmpMessage
		if json.Unmarshal(line, &m) != nil {
			continue
		}
		if m.Error != nil {
			return fmt.Errorf("%s -accel %s: QMP: %s: %s", binary, accel, m.Error.Class, m.Error.Desc)
		}
		if m.Return != nil {
			answers++
		}
	}
	return nil
}

// lastLines is the last n lines of s, joined by "; ".
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "; ")
}
