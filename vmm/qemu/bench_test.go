package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
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
