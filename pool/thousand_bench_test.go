package pool

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
	"github.com/nixos-fireactions/nixos-fireactions/config"
	"github.com/nixos-fireactions/nixos-fireactions/forge"
	"github.com/nixos-fireactions/nixos-fireactions/internal/hosttest"
	"github.com/nixos-fireactions/nixos-fireactions/netplan"
	"github.com/nixos-fireactions/nixos-fireactions/vmm"
	"github.com/nixos-fireactions/nixos-fireactions/vmstate"
	"golang.org/x/sys/unix"
)

// thousandVMs is how many VMs the host-scale benchmark tracks (issue 22).
const thousandVMs = 1000

// idleHV starts fake guests that report their runner ready and then wait,
// doing nothing, until killed: 1,000 of them cost the benchmark no CPU.
type idleHV struct {
	m    *Manager
	boot *hosttest.Boot
}

func (h *idleHV) Name() string { return "idle" }

func (h *idleHV) Start(_ context.Context, spec vmm.Spec) (vmm.Machine, error) {
	fm := &fakeMachine{done: make(chan struct{}), kill: make(chan struct{})}
	cfg := h.boot.Config(spec.ID)
	go func() {
		defer close(fm.done)
		_ = h.m.Report(cfg.Report.Token, agentproto.Report{VMID: cfg.VMID, Event: agentproto.EventRunnerReady})
		<-fm.kill
		fm.err = vmm.ErrKilled
	}()
	return fm, nil
}

// thousandRound is one round of the benchmark: a manager with 1,000 VMs.
type thousandRound struct {
	m     *Manager
	forge *fakeForge
	store *vmstate.Store
}

// newThousandRound builds a real manager (its Run loop not running: the
// benchmark calls reconcile itself) whose state is under dir, on the disk
// the test's temporary directory is on.
func newThousandRound(b *testing.B, dir string) *thousandRound {
	b.Helper()
	pc := config.PoolDefaults()
	pc.Name, pc.Forge, pc.Labels, pc.MinIdle, pc.Max = "p", "f", []string{"linux"}, 0, thousandVMs
	pc.Timeouts.Boot, pc.Timeouts.Idle, pc.Timeouts.Job = time.Hour, time.Hour, 24*time.Hour
	cfg := config.Defaults()
	cfg.HostID = "bench"
	cfg.Network.CIDR, cfg.Network.Gateway = "10.200.0.0/20", "10.200.0.1"
	cfg.Pools = []config.Pool{pc}
	store, err := vmstate.Open(dir)
	if err != nil {
		b.Fatal(err)
	}
	f := newFakeForge()
	f.hold = true // runners find no job: the VMs stay idle until told
	boot := hosttest.NewBoot()
	m, err := New(Deps{
		Config: &cfg, Forges: map[string]forge.Forge{"p": f}, Network: hosttest.NewNet(),
		Alloc: netplan.NewAllocator(netip.MustParsePrefix(cfg.Network.CIDR), netip.MustParseAddr(cfg.Network.Gateway)),
		Store: store, Boot: boot, Log: slog.New(slog.DiscardHandler),
		ReportURL: "http://10.200.0.1:8089/agent/v1/report", Interval: time.Hour,
	})
	if err != nil {
		b.Fatal(err)
	}
	m.d.Hypervisor = &idleHV{m: m, boot: boot}
	m.mu.Lock()
	m.recovered = true
	m.mu.Unlock()
	return &thousandRound{m: m, forge: f, store: store}
}

// waitPhase waits until n VMs are in phase ph.
func (r *thousandRound) waitPhase(b *testing.B, ph vmstate.Phase, n int) {
	b.Helper()
	deadline := time.Now().Add(5 * time.Minute)
	for r.m.Phases()[ph] != n {
		if time.Now().After(deadline) {
			b.Fatalf("timed out waiting for %d vms %s: %v", n, ph, r.m.Phases())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// durable counts the records on disk in phase ph.
func (r *thousandRound) durable(b *testing.B, ph vmstate.Phase) int {
	b.Helper()
	recs, err := r.store.List()
	if err != nil {
		b.Fatal(err)
	}
	n := 0
	for _, rec := range recs {
		if rec.Phase == ph {
			n++
		}
	}
	return n
}

// pass times one reconcile pass.
func (r *thousandRound) pass(ctx context.Context) time.Duration {
	d, _ := r.timedPass(ctx)
	return d
}

// timedPass is one reconcile pass's wall time and the CPU time of the
// thread that ran it (the pass runs on its caller's goroutine, held to
// one thread): the CPU time is the pass's own work, the rest the time
// it waited (for a core, for a lock).
func (r *thousandRound) timedPass(ctx context.Context) (wall, cpu time.Duration) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cpu0 := threadCPU()
	start := time.Now()
	r.m.reconcile(ctx)
	return time.Since(start), threadCPU() - cpu0
}

// threadCPU is the calling thread's CPU time so far, to the nanosecond
// (getrusage's is in scheduler ticks).
func threadCPU() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		panic(err)
	}
	return time.Duration(ts.Nano())
}

// BenchmarkThousandVMs tracks 1,000 VMs with a real manager and durable
// state on the normal disk (the test's temporary directory; TMPDIR
// chooses it): 1,000 queued jobs start 1,000 VMs, whose runners turn
// ready. It times reconcile passes with all of them idle, the one pass
// in which all 1,000 turn busy (the forge says so), and passes with all
// busy; it measures the memory in use with 1,000 VMs and how long after
// the busy pass every record on disk says busy.
func BenchmarkThousandVMs(b *testing.B) {
	const passes = 200 // timed passes per state and round
	var idle, busyPass, afterBusy []time.Duration
	var durable []time.Duration
	var rss, heap, threads []float64
	var idleCPU []time.Duration // CPU time of the idle passes' thread
	var idleAllocs []float64    // heap allocations per idle pass (the whole process's)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		r := newThousandRound(b, filepath.Join(b.TempDir(), "vms"))
		ids := make([]string, thousandVMs)
		for j := range ids {
			ids[j] = fmt.Sprintf("job-%d", j)
		}
		r.forge.enqueue(ids...)
		r.m.reconcile(ctx) // starts 1,000 VMs
		r.waitPhase(b, vmstate.Idle, thousandVMs)
		// The disk quiet: every ready record written.
		for deadline := time.Now().Add(5 * time.Minute); r.durable(b, vmstate.Idle) != thousandVMs; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				b.Fatal("idle records not on disk within 5 minutes")
			}
		}
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		heap = append(heap, float64(ms.HeapInuse)/(1<<20))
		rss = append(rss, float64(procStatus(b, "VmRSS"))/(1<<20))
		b.StartTimer()

		before := ms.Mallocs
		for range passes {
			wall, cpu := r.timedPass(ctx)
			idle, idleCPU = append(idle, wall), append(idleCPU, cpu)
		}
		runtime.ReadMemStats(&ms)
		idleAllocs = append(idleAllocs, float64(ms.Mallocs-before)/passes)
		// Every runner takes its job: the forge says all 1,000 are busy.
		r.forge.mu.Lock()
		for _, fr := range r.forge.runners {
			fr.busy = true
		}
		r.forge.queue = nil
		r.forge.mu.Unlock()
		start := time.Now()
		busyPass = append(busyPass, r.pass(ctx))
		if n := r.m.Phases()[vmstate.Busy]; n != thousandVMs {
			b.Fatalf("%d vms busy after the pass, want %d", n, thousandVMs)
		}
		b.StopTimer()
		for r.durable(b, vmstate.Busy) != thousandVMs {
			if time.Since(start) > 5*time.Minute {
				b.Fatal("busy records not on disk within 5 minutes")
			}
			time.Sleep(2 * time.Millisecond)
		}
		durable = append(durable, time.Since(start))
		b.StartTimer()
		for range passes {
			afterBusy = append(afterBusy, r.pass(ctx))
		}
		b.StopTimer()
		// The runtime keeps the threads it made: their number is the
		// most blocked in system calls (fsync) at once so far.
		threads = append(threads, float64(procStatus(b, "Threads")))
		dctx, dcancel := context.WithTimeout(ctx, time.Millisecond)
		_ = r.m.Drain(dctx) // forced: the busy VMs end at once
		dcancel()
		b.StartTimer()
	}
	all := slices.Concat(idle, busyPass, afterBusy)
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(ms(quantile(idle, 0.5)), "idle-p50-ms")
	b.ReportMetric(ms(quantile(idle, 0.99)), "idle-p99-ms")
	b.ReportMetric(ms(quantile(idleCPU, 0.99)), "idle-cpu-p99-ms")
	b.ReportMetric(slices.Max(idleAllocs), "idle-allocs/pass")
	b.ReportMetric(ms(quantile(busyPass, 0.5)), "busy-pass-p50-ms")
	b.ReportMetric(ms(slices.Max(busyPass)), "busy-pass-max-ms")
	b.ReportMetric(ms(quantile(afterBusy, 0.99)), "after-busy-p99-ms")
	b.ReportMetric(ms(quantile(all, 0.99)), "all-p99-ms")
	b.ReportMetric(ms(quantile(durable, 0.5)), "busy-durable-p50-ms")
	b.ReportMetric(slices.Max(rss), "rss-MiB")
	b.ReportMetric(slices.Max(heap), "heap-MiB")
	b.ReportMetric(slices.Max(threads), "threads")
	b.ReportMetric(0, "ns/op")
}

// quantile is the q-quantile of ds (nearest rank).
func quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(q*float64(len(s)) + 0.5)
	return s[min(max(i-1, 0), len(s)-1)]
}

// procStatus is a figure of /proc/self/status: VmRSS in bytes, Threads.
func procStatus(b *testing.B, field string) int64 {
	b.Helper()
	f, err := os.Open("/proc/self/status")
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			rest = strings.TrimSpace(rest)
			kb, unit := strings.CutSuffix(rest, " kB")
			n, err := strconv.ParseInt(kb, 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			if unit {
				n <<= 10
			}
			return n
		}
	}
	b.Fatalf("no %s in /proc/self/status", field)
	return 0
}
