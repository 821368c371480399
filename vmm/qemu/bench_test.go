package qemu

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
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
// template saved once before the loop (its RAM a file the restore maps
// private); and each idle VM's QEMU
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
			s.Restore, s.MemoryFile = state, r.memory
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
// once before the loop (Start, Resume, SendIdentity with its config). The
// template's RAM is a file (Spec.MemoryFile) its restores map private.
// The runner is testdata/stubrunner (ready at once, then idle): the
// figure is the VM's and the agent's, not a forge runner's. Every VM
// stays up, idle, until the end: then, with at least idleVMs of
// each kind up, each QEMU's PSS and private memory (Private_Clean +
// Private_Dirty of /proc/PID/smaps_rollup) are read and averaged per
// kind. A restore is also timed from its QEMU up (its QMP greeting
// taken) to runner-ready: what a job waits for when the pool's forge
// registration, which a restore's QEMU start overlaps, takes at least as
// long as that start (restore-from-qemu-up-ms). A third VM each
// iteration is restored in the pool's order (pool.resumeAhead): resumed
// once its QEMU is up, its identity sent registerFor after its Start, as
// when the forge takes that long to register the runner; it is timed
// from the identity sent, the runner registered, to runner-ready
// (restore-after-registration-ms), against the cold boot, whose Start
// comes after the registration too (its initramfs carries the runner).
// Run (as root: TAPs) with
//
//	go test -run '^$' -bench RealAgentColdBootVsRestore -benchtime 3x ./vmm/qemu/
func BenchmarkRealAgentColdBootVsRestore(b *testing.B) {
	const idleVMs = 3
	// registerFor is the forge's registration that a restore's QEMU
	// start, state load and first run go beside (pool.startRestore).
	const registerFor = 300 * time.Millisecond
	ctx := context.Background()
	r := newWarmRig(b)
	pool, mods := realAgentPool(b, r.kernel)
	r.archive = realAgentTemplate(b, r.kernel)
	tpl := r.spec("t")
	tpl.MemoryFile = filepath.Join(b.TempDir(), "memory")
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
	// one starts a VM (its own /30 on its own TAP) and waits for its
	// runner-ready; the VM stays up, idle, until killed. For a restore
	// it also returns when its QEMU was up (its QMP greeting taken), the
	// part a pool hides behind the runner's registration.
	var up time.Duration
	// ahead: a restore in the pool's order; the time returned is from its
	// identity sent.
	ahead := false
	one := func(restore bool) (time.Duration, vmm.Machine) {
		n++
		name := fmt.Sprintf("r%d", n)
		s := r.spec(name)
		host, guest := fmt.Sprintf("169.254.202.%d", 4*n+1), fmt.Sprintf("169.254.202.%d", 4*n+2)
		addr(b, s.TAP, host+"/30")
		rep := newReportSink(b, host, "t"+name)
		cfg := stubVMConfig(name, host, guest, rep.url, "t"+name, []byte("cred"))
		cfg.Modules = mods
		cfg.Runner.Command = append(cfg.Runner.Command, "idle")
		if restore {
			s.Restore, s.MemoryFile = state, tpl.MemoryFile
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
		b.Cleanup(func() { m.Kill(context.Background()) })
		var steps string
		if restore {
			step, stop := context.WithTimeout(ctx, stepWait)
			defer stop()
			started := time.Since(t0)
			q, err := m.(*machine).dial(step)
			if err != nil {
				b.Fatal(err)
			}
			q.Close()
			up = time.Since(t0)
			if err := m.(vmm.Warm).Resume(step); err != nil {
				b.Fatal(err)
			}
			resumed := time.Since(t0)
			if ahead {
				if resumed > registerFor {
					b.Fatalf("resumed %v after Start, past the registration of %v", resumed, registerFor)
				}
				time.Sleep(registerFor - resumed)
				t0 = time.Now() // the runner registered: its identity goes now
			}
			id, _ := json.Marshal(agentproto.Identity{Config: cfg, MAC: fmt.Sprintf("02:00:00:00:04:%02x", n), Seed: make([]byte, 32), Now: time.Now()})
			if err := m.(vmm.Warm).SendIdentity(step, id); err != nil {
				b.Fatal(err)
			}
			steps = fmt.Sprintf("started %v, QEMU up %v, resumed %v, identity taken %v", started.Round(time.Millisecond), up.Round(time.Millisecond), resumed.Round(time.Millisecond), time.Since(t0).Round(time.Millisecond))
		}
		for deadline := time.Now().Add(bootWait); !slices.Contains(rep.events(), agentproto.EventRunnerReady); time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				b.Fatalf("no runner-ready from %s (restore %v) within %v; reports %v; console:\n%s", name, restore, bootWait, rep.events(), readConsole(s.ConsoleLog))
			}
		}
		took := time.Since(t0)
		if steps != "" {
			b.Logf("restore %s: %s, runner-ready %v", name, steps, took.Round(time.Millisecond))
		}
		if d := os.Getenv("FIREACTIONS_BENCH_CONSOLES"); d != "" { // where each VM's console is kept, to read its agent's steps
			if err := os.WriteFile(filepath.Join(d, name), []byte(readConsole(s.ConsoleLog)), 0o600); err != nil {
				b.Fatal(err)
			}
		}
		return took, m
	}
	// The timed VMs end at once: idle guests under TCG take CPU the next
	// one's start would wait for.
	var cold, warm, fromUp, registered time.Duration
	for b.Loop() {
		c, cm := one(false)
		cm.Kill(ctx)
		w, wm := one(true)
		wm.Kill(ctx)
		ahead = true
		r, rm := one(true)
		ahead = false
		rm.Kill(ctx)
		cold, warm, fromUp, registered = cold+c, warm+w, fromUp+w-up, registered+r
		b.Logf("start to runner-ready: cold %v, restore %v (%v from its QEMU up); resumed ahead of a %v registration: %v from it to runner-ready",
			c.Round(time.Millisecond), w.Round(time.Millisecond), (w - up).Round(time.Millisecond), registerFor, r.Round(time.Millisecond))
	}
	k := float64(b.N)
	b.ReportMetric(float64(cold.Milliseconds())/k, "cold-ms")
	b.ReportMetric(float64(warm.Milliseconds())/k, "restore-ms")
	b.ReportMetric(float64(cold)/float64(warm), "speedup")
	// A pool starts a restore's QEMU before it registers the runner
	// (pool.startRestore): when the forge takes at least as long as
	// QEMU's start, the job waits from QEMU up, a cold boot from its Start.
	b.ReportMetric(float64(fromUp.Milliseconds())/k, "restore-from-qemu-up-ms")
	b.ReportMetric(float64(cold)/float64(fromUp), "speedup-qemu-started-ahead")
	// And resumes it too (pool.resumeAhead): after a registration of
	// registerFor, the job waits from the registration on, as a cold
	// boot's does.
	b.ReportMetric(float64(registered.Milliseconds())/k, "restore-after-registration-ms")
	b.ReportMetric(float64(cold)/float64(registered), "speedup-after-registration")
	pids := map[bool][]int{}
	for range idleVMs {
		for _, restore := range []bool{false, true} {
			_, m := one(restore)
			pids[restore] = append(pids[restore], m.PID())
		}
	}
	time.Sleep(3 * time.Second) // the last ones settle to idle
	for _, restore := range []bool{false, true} {
		kind := map[bool]string{false: "cold", true: "restore"}[restore]
		var p, priv int64
		for _, pid := range pids[restore] {
			got := smapsRollup(b, pid)
			p += got["Pss"]
			priv += got["Private_Clean"] + got["Private_Dirty"]
			b.Logf("idle %s VM, QEMU %d: Pss %d KiB, Private %d KiB, Shared_Clean %d KiB", kind, pid, got["Pss"], got["Private_Clean"]+got["Private_Dirty"], got["Shared_Clean"])
		}
		vms := float64(len(pids[restore]))
		b.ReportMetric(float64(p)/vms, kind+"-PSS-KiB/VM")
		b.ReportMetric(float64(priv)/vms, kind+"-private-KiB/VM")
	}
}

// smapsRollup is process pid's /proc/PID/smaps_rollup, in KiB by field.
func smapsRollup(t testing.TB, pid int) map[string]int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || !strings.HasSuffix(v, " kB") {
			continue
		}
		var kib int64
		if _, err := fmt.Sscan(strings.TrimSuffix(strings.TrimSpace(v), " kB"), &kib); err == nil {
			out[k] = kib
		}
	}
	if _, ok := out["Pss"]; !ok {
		t.Fatalf("no Pss in /proc/%d/smaps_rollup", pid)
	}
	return out
}

// pss is process pid's proportional set size in KiB (smaps_rollup).
func pss(t testing.TB, pid int) int64 {
	t.Helper()
	return smapsRollup(t, pid)["Pss"]
}
