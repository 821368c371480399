package pool

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/config"
	"github.com/nixos-fireactions/nixos-fireactions/forge"
	"github.com/nixos-fireactions/nixos-fireactions/internal/hosttest"
	"github.com/nixos-fireactions/nixos-fireactions/netplan"
	"github.com/nixos-fireactions/nixos-fireactions/vmstate"
)

// demandBench is a manager (not running) with n VMs booting in a pool of
// max n and n jobs queued at its forge, which tells its queue changes.
func demandBench(b *testing.B, n int) (*Manager, *notifyingForge) {
	pc := config.PoolDefaults()
	pc.Name, pc.Forge, pc.Labels, pc.Max = "p", "f", []string{"linux"}, n
	cfg := config.Defaults()
	cfg.HostID, cfg.Network.Gateway, cfg.Pools = "bench", "10.200.0.1", []config.Pool{pc}
	store, err := vmstate.Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	nf := &notifyingForge{fakeForge: newFakeForge()}
	m, err := New(Deps{
		Config: &cfg, Forges: map[string]forge.Forge{"p": nf}, Network: hosttest.NewNet(),
		Alloc: netplan.NewAllocator(netip.MustParsePrefix("10.200.0.0/16"), netip.MustParseAddr("10.200.0.1")),
		Store: store, Boot: hosttest.NewBoot(), Log: slog.New(slog.DiscardHandler),
		Interval: time.Hour, Hypervisor: &fakeHV{behave: guestHangs},
	})
	if err != nil {
		b.Fatal(err)
	}
	p := m.pools[0]
	for i := 0; i < n; i++ {
		v := newVM(m, p, forge.NewVMID())
		v.rec.Phase = vmstate.Booting
		m.vms[v.rec.ID] = v
		p.moved("", vmstate.Booting)
		nf.enqueue(fmt.Sprintf("job-%d", i))
	}
	m.reconcile(context.Background()) // the queue known, as after the first pass
	return m, nf
}

// BenchmarkQueueChange is what one queue change costs the manager with
// 1,000 VMs and 1,000 queued jobs tracked: the event applied and its
// pool's VMs to start decided (react), against the full pass every
// change cost before (reconcile: the queue and runners read, every job
// assigned and tracked, every VM looked at).
// Run: go test -run '^$' -bench QueueChange ./pool
func BenchmarkQueueChange(b *testing.B) {
	for _, n := range []int{100, 1000} {
		b.Run(fmt.Sprintf("react/vms=%d", n), func(b *testing.B) {
			m, nf := demandBench(b, n)
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				nf.tell("extra", i%2 == 0)
				m.react(ctx)
			}
		})
		b.Run(fmt.Sprintf("full-pass/vms=%d", n), func(b *testing.B) {
			m, _ := demandBench(b, n)
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				m.reconcile(ctx)
			}
		})
	}
}
