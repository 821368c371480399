package github_test

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
	"github.com/nixos-fireactions/nixos-fireactions/config"
	"github.com/nixos-fireactions/nixos-fireactions/forge"
	"github.com/nixos-fireactions/nixos-fireactions/internal/hosttest"
	"github.com/nixos-fireactions/nixos-fireactions/netplan"
	"github.com/nixos-fireactions/nixos-fireactions/pool"
	"github.com/nixos-fireactions/nixos-fireactions/vmm"
	"github.com/nixos-fireactions/nixos-fireactions/vmstate"
)

// farm is the real pool manager over the GitHub driver, with a fake VMM,
// network and boot files: what tests watch is the manager's decisions
// (VMs started per pool, jobs it cannot serve).
type farm struct {
	m    *pool.Manager
	hv   *fakeVMM
	obs  *countingObserver
	stop context.CancelFunc
	done chan struct{}

	closeOnce sync.Once
}

// poolConfig is a pool of the "github" forge.
func poolConfig(name, scope string, labels ...string) config.Pool {
	return config.Pool{
		Name: name, Forge: "github", Scope: scope, Labels: labels, Max: 4,
		VM:       config.VMShape{VCPUs: 1, MemoryMiB: 128},
		Runner:   config.RunnerOptions{Path: "/home/runner/run.sh", User: "runner", UID: 1001, GID: 1001, FetchInterval: time.Second},
		Timeouts: config.Timeouts{Boot: time.Minute, Idle: time.Minute, Job: time.Hour},
	}
}

func newFarm(t testing.TB, forges map[string]forge.Forge, pools ...config.Pool) *farm {
	t.Helper()
	return newFarmWith(t, t.TempDir(), 50*time.Millisecond, forges, pools...)
}

// newFarmWith is newFarm with the VM state in dir and the given reconcile
// period. close ends it (also at the test's end).
func newFarmWith(t testing.TB, dir string, interval time.Duration, forges map[string]forge.Forge, pools ...config.Pool) *farm {
	t.Helper()
	cfg := &config.Config{
		HostID:  "t",
		Network: config.Network{Bridge: "fa0", CIDR: "10.99.0.0/20", Gateway: "10.99.0.1", MTU: 1500, AgentPort: 8089},
		Pools:   pools,
	}
	store, err := vmstate.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	boot := hosttest.NewBoot()
	hv := &fakeVMM{boot: boot, started: make(chan *fakeMachine, 1024)}
	obs := &countingObserver{started: map[string]int{}}
	m, err := pool.New(pool.Deps{
		Config: cfg, Forges: forges, Hypervisor: hv, Network: hosttest.NewNet(),
		Alloc: netplan.NewAllocator(netip.MustParsePrefix(cfg.Network.CIDR), netip.MustParseAddr(cfg.Network.Gateway)),
		Store: store, Boot: boot, Log: slog.New(slog.DiscardHandler), ReportURL: "http://10.99.0.1:8089",
		Interval: interval, Observer: obs,
	})
	if err != nil {
		t.Fatal(err)
	}
	hv.m = m
	ctx, cancel := context.WithCancel(context.Background())
	f := &farm{m: m, hv: hv, obs: obs, stop: cancel, done: make(chan struct{})}
	go func() { m.Run(ctx); close(f.done) }()
	t.Cleanup(f.close)
	return f
}

// close stops the manager and drains it, once.
func (f *farm) close() {
	f.closeOnce.Do(func() {
		f.stop()
		<-f.done
		dctx, dcancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer dcancel()
		_ = f.m.Drain(dctx)
	})
}

// fakeVMM starts machines that do nothing until released: then the guest
// reports its runner ready and done, and powers off.
type fakeVMM struct {
	m       *pool.Manager
	boot    *hosttest.Boot
	started chan *fakeMachine
	fail    atomic.Bool // Start fails
}

func (h *fakeVMM) Name() string { return "fake" }

func (h *fakeVMM) Start(_ context.Context, s vmm.Spec) (vmm.Machine, error) {
	if h.fail.Load() {
		return nil, errors.New("fake VMM: start failed")
	}
	m := &fakeMachine{id: s.ID, at: time.Now(), cfg: h.boot.Config(s.ID), mgr: h.m, done: make(chan struct{})}
	h.started <- m
	return m, nil
}

type fakeMachine struct {
	id   string
	at   time.Time // when Start was called
	cfg  agentproto.Config
	mgr  *pool.Manager
	once sync.Once
	done chan struct{}
}

func (m *fakeMachine) PID() int              { return 1 }
func (m *fakeMachine) Done() <-chan struct{} { return m.done }
func (m *fakeMachine) Err() error            { return nil }
func (m *fakeMachine) Kill(ctx context.Context) error {
	m.once.Do(func() { close(m.done) })
	return nil
}

// crash ends the guest before its runner is ready.
func (m *fakeMachine) crash() { m.once.Do(func() { close(m.done) }) }

// runJob is the guest's life after boot: runner ready, runner done,
// power off.
func (m *fakeMachine) runJob() {
	tok := m.cfg.Report.Token
	_ = m.mgr.Report(tok, agentproto.Report{VMID: m.id, Event: agentproto.EventRunnerReady})
	_ = m.mgr.Report(tok, agentproto.Report{VMID: m.id, Event: agentproto.EventRunnerExited})
	// Power off once the manager has taken the exit report in, as a real
	// guest's agent does (its reports are acknowledged first).
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if rec, err := m.mgr.VM(m.id); err != nil || rec.ExitCode != nil {
			break
		}
	}
	m.once.Do(func() { close(m.done) })
}

type countingObserver struct {
	mu       sync.Mutex
	started  map[string]int
	unserved int
}

func (o *countingObserver) VMStarted(p string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.started[p]++
}

func (o *countingObserver) UnservedJob() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.unserved++
}

func (o *countingObserver) counts() (map[string]int, int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := map[string]int{}
	for k, v := range o.started {
		out[k] = v
	}
	return out, o.unserved
}

func (o *countingObserver) VMFailed(string, string)           {}
func (o *countingObserver) Provisioned(string, time.Duration) {}
func (o *countingObserver) Booted(string, time.Duration)      {}
func (o *countingObserver) JobDone(string, time.Duration)     {}
func (o *countingObserver) QueueWait(string, time.Duration)   {}
func (o *countingObserver) RecordUnsaved(string)              {}
func (o *countingObserver) HostShortage(string, string)       {}
