package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
	"github.com/nixos-fireactions/nixos-fireactions/initramfs"
	"github.com/nixos-fireactions/nixos-fireactions/vmm"
)

// BenchmarkColdBootVsRestore, side by side in one run under the same QEMU
// (TCG here): from Start to the guest reporting its identity on the
// console, for a VM booted from nothing and for one restored from a
// template saved once before the loop; and each idle VM's QEMU
// proportional set size (PSS) right after. Both guests are the same
// (testdata/warmguest): the cold one boots, loads its modules and waits
// on the identity port, which the restored one finds already done. Run
// (as root: TAPs) with
//
//	go test -run '^$' -bench ColdBootVsRestore -benchtime 3x ./vmm/qemu/
func BenchmarkColdBootVsRestore(b *testing.B) {
	ctx := context.Background()
	r := newWarmRig(b)
	state, _ := r.template(ctx)
	d := r.d
	n := 0

	// one VM to its identity report; returns the time and its QEMU's PSS.
	one := func(restore bool) (time.Duration, int64) {
		n++
		s := r.spec(fmt.Sprintf("b%d", n))
		if restore {
			s.Restore = state
		}
		t0 := time.Now()
		m, err := d.Start(ctx, s)
		if err != nil {
			b.Fatal(err)
		}
		defer m.Kill(ctx)
		w := m.(vmm.Warm)
		if restore {
			if err := w.Resume(ctx); err != nil {
				b.Fatal(err)
			}
		} else {
			waitConsole(b, m, s.ConsoleLog, "warmguest: waiting for identity", 4*time.Minute)
		}
		seed := make([]byte, 32)
		id, _ := json.Marshal(agentproto.Identity{Config: agentproto.Config{VMID: s.ID, Hostname: "idle"}, Seed: seed, Now: time.Now()})
		if err := w.SendIdentity(ctx, id); err != nil {
			b.Fatal(err)
		}
		waitConsole(b, m, s.ConsoleLog, "warmguest: vm="+s.ID, 4*time.Minute)
		took := time.Since(t0)
		return took, pss(b, m.PID())
	}
	var cold, warm time.Duration
	var coldPSS, warmPSS int64
	for b.Loop() {
		c, cp := one(false)
		w, wp := one(true)
		cold, warm, coldPSS, warmPSS = cold+c, warm+w, coldPSS+cp, warmPSS+wp
		b.Logf("cold %v (PSS %d KiB), restore %v (PSS %d KiB)", c.Round(time.Millisecond), cp, w.Round(time.Millisecond), wp)
	}
	k := float64(b.N)
	b.ReportMetric(float64(cold.Milliseconds())/k, "cold-ms")
	b.ReportMetric(float64(warm.Milliseconds())/k, "restore-ms")
	b.ReportMetric(float64(cold)/float64(warm), "speedup")
	b.ReportMetric(float64(coldPSS)/k, "cold-PSS-KiB")
	b.ReportMetric(float64(warmPSS)/k, "restore-PSS-KiB")
}

// BenchmarkRealAgentColdBootVsRestore, side by side in one run under the
// same QEMU (TCG here): from Start to the host receiving the real agent's
// runner-ready report, for a VM booted cold with its config in its
// initramfs, and for one restored from a template of the same agent saved
// once before the loop (Start, Resume, SendIdentity with its config).
// The runner is testdata/stubrunner (ready at once): the figure is the
// VM's and the agent's, not a forge runner's. Run (as root: TAPs) with
//
//	go test -run '^$' -bench RealAgentColdBootVsRestore -benchtime 3x ./vmm/qemu/
func BenchmarkRealAgentColdBootVsRestore(b *testing.B) {
	ctx := context.Background()
	r := newWarmRig(b)
	pool, mods := realAgentPool(b, r.kernel)
	r.archive = realAgentTemplate(b, r.kernel)
	tpl := r.spec("t")
	m, err := r.d.Start(ctx, tpl)
	if err != nil {
		b.Fatal(err)
	}
	waitConsole(b, m, tpl.ConsoleLog, "template: waiting for identity on "+agentproto.IdentityPort, bootWait)
	state := filepath.Join(b.TempDir(), "state")
	if err := m.(vmm.Warm).SaveState(ctx, state); err != nil {
		b.Fatal(err)
	}
	m.Kill(ctx)
	n := 0
	one := func(restore bool) time.Duration {
		n++
		name := fmt.Sprintf("r%d", n)
		s := r.spec(name)
		defer exec.Command("ip", "link", "del", s.TAP).Run() // the next VM's TAP takes its address
		addr(b, s.TAP, "169.254.202.1/30")
		rep := newReportSink(b, "169.254.202.1", "t"+name)
		cfg := stubVMConfig(name, "169.254.202.1", "169.254.202.2", rep.url, "t"+name, []byte("cred"))
		cfg.Modules = mods
		if restore {
			s.Restore = state
		} else {
			s.Identity = ""
			s.Initramfs = filepath.Join(b.TempDir(), "vm.cpio")
			if err := initramfs.WriteVM(s.Initramfs, pool, cfg); err != nil {
				b.Fatal(err)
			}
		}
		t0 := time.Now()
		m, err := r.d.Start(ctx, s)
		if err != nil {
			b.Fatal(err)
		}
		defer m.Kill(ctx)
		if restore {
			step, stop := context.WithTimeout(ctx, stepWait)
			defer stop()
			if err := m.(vmm.Warm).Resume(step); err != nil {
				b.Fatal(err)
			}
			id, _ := json.Marshal(agentproto.Identity{Config: cfg, MAC: "02:00:00:00:04:01", Seed: make([]byte, 32), Now: time.Now()})
			if err := m.(vmm.Warm).SendIdentity(step, id); err != nil {
				b.Fatal(err)
			}
		}
		for deadline := time.Now().Add(bootWait); !slices.Contains(rep.events(), agentproto.EventRunnerReady); time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				b.Fatalf("no runner-ready from %s (restore %v) within %v; reports %v; console:\n%s", name, restore, bootWait, rep.events(), readConsole(s.ConsoleLog))
			}
		}
		return time.Since(t0)
	}
	var cold, warm time.Duration
	for b.Loop() {
		c := one(false)
		w := one(true)
		cold, warm = cold+c, warm+w
		b.Logf("start to runner-ready: cold %v, restore %v", c.Round(time.Millisecond), w.Round(time.Millisecond))
	}
	k := float64(b.N)
	b.ReportMetric(float64(cold.Milliseconds())/k, "cold-ms")
	b.ReportMetric(float64(warm.Milliseconds())/k, "restore-ms")
	b.ReportMetric(float64(cold)/float64(warm), "speedup")
}

// pss is process pid's proportional set size in KiB (smaps_rollup).
func pss(t testing.TB, pid int) int64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "Pss:"); ok {
			var kib int64
			fmt.Sscan(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), &kib)
			return kib
		}
	}
	t.Fatalf("no Pss in /proc/%d/smaps_rollup", pid)
	return 0
}
