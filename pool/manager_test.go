package pool

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
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
)

type harness struct {
	m     *Manager
	forge *fakeForge
	hv    *fakeHV
	net   *hosttest.Net
	boot  *hosttest.Boot
	store *vmstate.Store
	alloc *netplan.Allocator
	stop  context.CancelFunc
	done  chan struct{}
}

func newHarness(t *testing.T, minIdle, max int, behave guestBehaviour, tune func(*config.Pool)) *harness {
	t.Helper()
	return newHarnessLogging(t, minIdle, max, behave, tune, slog.New(slog.NewTextHandler(io.Discard, nil)))
}

// newHarnessLogging is newHarness with the manager logging to log.
func newHarnessLogging(t *testing.T, minIdle, max int, behave guestBehaviour, tune func(*config.Pool), log *slog.Logger) *harness {
	t.Helper()
	return newHarnessAt(t, filepath.Join(t.TempDir(), "vms"), minIdle, max, behave, tune, log, nil, nil)
}

// newHarnessForge is newHarnessLogging with the pool's forge being
// wrap(the fake forge), when wrap is set.
func newHarnessForge(t *testing.T, minIdle, max int, behave guestBehaviour, tune func(*config.Pool), log *slog.Logger, wrap func(*fakeForge) forge.Forge) *harness {
	t.Helper()
	return newHarnessAt(t, filepath.Join(t.TempDir(), "vms"), minIdle, max, behave, tune, log, nil, wrap)
}

// newHarnessAt is newHarnessLogging with the VM records under stateDir,
// the manager telling obs (nil: no one) of its events and the pool's
// forge being wrap(the fake forge), when wrap is set.
func newHarnessAt(t *testing.T, stateDir string, minIdle, max int, behave guestBehaviour, tune func(*config.Pool), log *slog.Logger, obs Observer, wrap func(*fakeForge) forge.Forge) *harness {
	t.Helper()
	return newHarnessEvery(t, 10*time.Millisecond, stateDir, minIdle, max, behave, tune, log, obs, wrap)
}

// newHarnessEvery is newHarnessAt with a full reconcile pass each
// interval.
func newHarnessEvery(t *testing.T, interval time.Duration, stateDir string, minIdle, max int, behave guestBehaviour, tune func(*config.Pool), log *slog.Logger, obs Observer, wrap func(*fakeForge) forge.Forge) *harness {
	t.Helper()
	return newHarnessDeps(t, interval, stateDir, minIdle, max, behave, tune, log, obs, wrap, nil)
}

// newHarnessDeps is newHarnessEvery with deps, when set, changing the
// manager's collaborators before it is made.
func newHarnessDeps(t *testing.T, interval time.Duration, stateDir string, minIdle, max int, behave guestBehaviour, tune func(*config.Pool), log *slog.Logger, obs Observer, wrap func(*fakeForge) forge.Forge, deps func(*Deps)) *harness {
	t.Helper()
	pc := config.PoolDefaults()
	pc.Name, pc.Forge, pc.Labels, pc.MinIdle, pc.Max = "p", "f", []string{"linux"}, minIdle, max
	pc.Timeouts.Boot = 2 * time.Second
	if tune != nil {
		tune(&pc)
	}
	cfg := config.Defaults()
	cfg.HostID = "test"
	cfg.Network.Gateway = "10.200.0.1"
	cfg.Pools = []config.Pool{pc}
	store, err := vmstate.Open(stateDir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() }) // before an unmount of its disk (cleanups run last first)
	h := &harness{
		forge: newFakeForge(), net: hosttest.NewNet(),
		boot: hosttest.NewBoot(), store: store,
		alloc: netplan.NewAllocator(netip.MustParsePrefix("10.200.0.0/24"), netip.MustParseAddr("10.200.0.1")),
	}
	var f forge.Forge = h.forge
	if wrap != nil {
		f = wrap(h.forge)
	}
	// The fake VMM, which deps may tune before the manager runs.
	h.hv = &fakeHV{boot: h.boot, forge: h.forge, behave: behave, jobTime: 30 * time.Millisecond}
	d := Deps{
		Config: &cfg, Forges: map[string]forge.Forge{"p": f}, Network: h.net, Alloc: h.alloc,
		Store: store, Boot: h.boot, Log: log, Hypervisor: h.hv,
		ReportURL: "http://10.200.0.1:8089/agent/v1/report", Interval: interval, Observer: obs,
	}
	if deps != nil {
		deps(&d)
	}
	m, err := New(d)
	if err != nil {
		t.Fatal(err)
	}
	h.hv.m = m
	m.d.Hypervisor = h.hv
	h.m = m
	ctx, cancel := context.WithCancel(context.Background())
	h.stop, h.done = cancel, make(chan struct{})
	go func() { m.Run(ctx); close(h.done) }()
	t.Cleanup(func() { h.drain(t, time.Second) })
	return h
}

func (h *harness) drain(t *testing.T, grace time.Duration) error {
	h.stop()
	<-h.done
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	return h.m.Drain(ctx)
}

// assertNothingLeft checks the end state every test must reach: no VM
// directory, TAP, address or runner.
func (h *harness) assertNothingLeft(t *testing.T) {
	t.Helper()
	if n := h.forge.runnerCount(); n != 0 {
		t.Errorf("%d runner(s) left at the forge", n)
	}
	if n := h.net.Count(); n != 0 {
		t.Errorf("%d TAP(s) left", n)
	}
	h.hv.mu.Lock()
	if h.hv.running != 0 {
		t.Errorf("%d VM(s) still running", h.hv.running)
	}
	h.hv.mu.Unlock()
	h.net.Lock()
	if len(h.net.Admitted) != 0 {
		t.Errorf("network rules still admit %v", h.net.Admitted)
	}
	h.net.Unlock()
	recs, _ := h.store.List()
	if len(recs) != 0 {
		t.Errorf("%d VM directories left", len(recs))
	}
	if _, err := h.alloc.Allocate("probe"); err != nil {
		t.Errorf("allocator: %v", err)
	} else if ip, _ := h.alloc.Allocate("probe2"); ip.String() != "10.200.0.3" {
		t.Errorf("addresses still held: second free address is %s", ip)
	}
}

func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestEveryJobGetsItsOwnVMAndNothingLeaks(t *testing.T) {
	h := newHarness(t, 1, 2, guestRunsOneJob, nil)
	eventually(t, 2*time.Second, "min_idle VM ready", func() bool { return h.m.Phases()[vmstate.Idle] == 1 })
	h.forge.enqueue("j1", "j2", "j3", "j4")
	eventually(t, 5*time.Second, "4 jobs finished", func() bool {
		h.forge.mu.Lock()
		defer h.forge.mu.Unlock()
		return len(h.forge.finished) == 4
	})
	runners := map[string]bool{}
	for _, r := range h.forge.finished {
		runners[r] = true
	}
	if len(runners) != 4 {
		t.Fatalf("4 jobs ran on %d runners: %v", len(runners), h.forge.finished)
	}
	h.hv.mu.Lock()
	maxAlive := h.hv.maxAlive
	h.hv.mu.Unlock()
	if maxAlive > 2 {
		t.Fatalf("%d VMs alive at once with max 2", h.hv.maxAlive)
	}
	if err := h.drain(t, time.Second); err != nil {
		t.Fatal(err)
	}
	h.assertNothingLeft(t)
}

// TestGuestGetsExactlyItsRunnersPlan: the manager passes a VM the plan its
// forge made for that VM's runner — that runner's own credential file —
// and nothing else of the forge's.
func TestGuestGetsExactlyItsRunnersPlan(t *testing.T) {
	h := newHarness(t, 2, 2, guestRunsOneJob, nil)
	eventually(t, 2*time.Second, "VMs ready", func() bool { return h.m.Phases()[vmstate.Idle] == 2 })
	h.boot.Lock()
	defer h.boot.Unlock()
	if len(h.boot.Configs) != 2 {
		t.Fatalf("%d guest configs written, want 2", len(h.boot.Configs))
	}
	seen := map[string]bool{}
	for id, cfg := range h.boot.Configs {
		rec, err := h.m.VM(id)
		if err != nil {
			t.Fatal(err)
		}
		files := cfg.Runner.Files
		if len(files) != 1 || string(files[0].Content) != "own-credential-"+rec.RunnerID {
			t.Fatalf("vm %s (runner %s) got files %+v", id, rec.RunnerID, files)
		}
		if seen[rec.RunnerID] {
			t.Fatalf("two VMs got runner %s", rec.RunnerID)
		}
		seen[rec.RunnerID] = true
		if rec.AgentToken != "" {
			t.Fatal("the operator view of a VM shows its agent token")
		}
		b, _ := json.Marshal(cfg)
		if strings.Contains(string(b), h.forge.secret) {
			t.Fatalf("vm %s config holds the forge's secret", id)
		}
	}
}

// TestSpecCarriesSlotAndMetadata: each VM's spec has its slot (its
// address's offset in network.cidr, so live VMs' slots differ) and
// metadata naming it, its pool and the host, with no secret in it.
func TestSpecCarriesSlotAndMetadata(t *testing.T) {
	h := newHarness(t, 2, 2, guestRunsOneJob, nil)
	eventually(t, 2*time.Second, "VMs ready", func() bool { return h.m.Phases()[vmstate.Idle] == 2 })
	h.hv.mu.Lock()
	specs := append([]vmm.Spec(nil), h.hv.specs...)
	h.hv.mu.Unlock()
	if len(specs) != 2 {
		t.Fatalf("%d VMs started, want 2", len(specs))
	}
	slots := map[int]string{}
	for _, spec := range specs {
		rec, err := h.m.VM(spec.ID)
		if err != nil {
			t.Fatal(err)
		}
		addr := netip.MustParseAddr(rec.Address)
		if want := int(addr.As4()[3]); spec.Slot != want {
			t.Errorf("vm %s at %s has slot %d, want %d", spec.ID, addr, spec.Slot, want)
		}
		if other, dup := slots[spec.Slot]; dup {
			t.Errorf("vms %s and %s share slot %d", other, spec.ID, spec.Slot)
		}
		slots[spec.Slot] = spec.ID
		want := map[string]string{"vm_id": spec.ID, "pool": "p", "host_id": "test"}
		if fmt.Sprint(spec.Metadata) != fmt.Sprint(want) {
			t.Errorf("vm %s metadata %v, want %v", spec.ID, spec.Metadata, want)
		}
		cfg := h.boot.Config(spec.ID)
		if cfg.Report.Token == "" {
			t.Fatalf("vm %s has no agent token to look for", spec.ID)
		}
		for _, secret := range []string{h.forge.secret, cfg.Report.Token, "own-credential-" + rec.RunnerID} {
			for k, v := range spec.Metadata {
				if strings.Contains(v, secret) {
					t.Errorf("vm %s metadata %s holds a secret", spec.ID, k)
				}
			}
		}
	}
}

func TestBootFailureRemovesRunnerAndBacksOff(t *testing.T) {
	h := newHarness(t, 1, 1, guestCrashes, nil)
	eventually(t, 3*time.Second, "two failed boots", func() bool {
		h.forge.mu.Lock()
		defer h.forge.mu.Unlock()
		return len(h.forge.removed) >= 2
	})
	// Backoff: 1 s after the first failure, 2 s after the second, so three
	// seconds hold at most three attempts, not hundreds.
	time.Sleep(500 * time.Millisecond)
	h.hv.mu.Lock()
	started := h.hv.started
	h.hv.mu.Unlock()
	if started > 3 {
		t.Fatalf("%d boots in ~3s: no backoff", started)
	}
	if err := h.drain(t, time.Second); err != nil {
		t.Fatal(err)
	}
	h.assertNothingLeft(t)
}

func TestBootTimeoutKillsVMAndRemovesRunner(t *testing.T) {
	h := newHarness(t, 1, 1, guestHangs, func(p *config.Pool) { p.Timeouts.Boot = 50 * time.Millisecond })
	eventually(t, 2*time.Second, "a hung VM removed", func() bool {
		h.forge.mu.Lock()
		defer h.forge.mu.Unlock()
		return len(h.forge.removed) >= 1
	})
	if err := h.drain(t, time.Second); err != nil {
		t.Fatal(err)
	}
	h.assertNothingLeft(t)
}

func TestScaleDownNeverPicksABusyVM(t *testing.T) {
	h := newHarness(t, 0, 3, guestRunsOneJob, func(p *config.Pool) { p.Timeouts.Idle = 10 * time.Millisecond })
	h.hv.jobTime = 2 * time.Second
	h.forge.enqueue("long")
	eventually(t, 2*time.Second, "the job's VM busy", func() bool { return h.m.Phases()[vmstate.Busy] == 1 })
	// No demand left and min_idle 0: the busy VM is surplus by count but
	// must be left alone until its job ends.
	time.Sleep(300 * time.Millisecond)
	if got := h.m.Phases()[vmstate.Busy]; got != 1 {
		t.Fatalf("busy VMs = %d after the idle timeout passed, want 1", got)
	}
	h.forge.mu.Lock()
	finished := len(h.forge.finished)
	h.forge.mu.Unlock()
	if finished != 0 {
		t.Fatal("job ended early")
	}
}

func TestSurplusIdleVMRemovedAfterIdleTimeout(t *testing.T) {
	h := newHarness(t, 0, 3, guestRunsOneJob, func(p *config.Pool) { p.Timeouts.Idle = 20 * time.Millisecond })
	h.forge.mu.Lock()
	h.forge.hold = true
	h.forge.mu.Unlock()
	h.forge.enqueue("x", "y")
	eventually(t, 2*time.Second, "2 idle", func() bool { return h.m.Phases()[vmstate.Idle] == 2 })
	// The jobs are cancelled: both VMs are now surplus.
	h.forge.mu.Lock()
	h.forge.queue = nil
	h.forge.mu.Unlock()
	eventually(t, 2*time.Second, "surplus idle VMs removed", func() bool { return len(h.m.VMs()) == 0 })
	h.assertNothingLeft(t)
}

func TestDrainWaitsForBusyThenForces(t *testing.T) {
	h := newHarness(t, 1, 2, guestRunsOneJob, nil)
	h.hv.jobTime = 150 * time.Millisecond
	h.forge.enqueue("a")
	eventually(t, 2*time.Second, "busy VM", func() bool { return h.m.Phases()[vmstate.Busy] == 1 })
	if err := h.drain(t, 2*time.Second); err != nil {
		t.Fatalf("drain with a short job: %v", err)
	}
	if _, ok := h.forge.finished["a"]; !ok {
		t.Fatal("drain did not let the busy job finish")
	}
	h.assertNothingLeft(t)

	h2 := newHarness(t, 0, 1, guestRunsOneJob, nil)
	h2.hv.jobTime = time.Hour
	h2.forge.enqueue("b")
	eventually(t, 2*time.Second, "busy VM", func() bool { return h2.m.Phases()[vmstate.Busy] == 1 })
	if err := h2.drain(t, 50*time.Millisecond); err == nil {
		t.Fatal("drain past its grace period did not say it forced")
	}
	if got, want := h2.forge.failedJobs(), "drained (the host's drain grace period ended)"; got["b"] != want {
		t.Errorf("jobs failed at the forge: %q, want b with reason %q", got, want)
	}
	h2.assertNothingLeft(t)
}

func TestRecoverRemovesLeftovers(t *testing.T) {
	h := newHarness(t, 0, 1, guestRunsOneJob, nil)
	h.stop()
	<-h.done
	// A previous run's VM: a record, a TAP and a runner at the forge.
	old := &vmstate.Record{ID: "0ld", Pool: "p", Phase: vmstate.Busy, PID: 4242, TAP: "fa0ld", RunnerID: "99", RunnerName: "fa-test-0ld"}
	if err := h.store.Create(old); err != nil {
		t.Fatal(err)
	}
	h.net.TAPs["fa0ld"] = true
	h.net.TAPs["fastray"] = true
	h.forge.runners["99"] = &fakeRunner{ref: forgeRef("99", "fa-test-0ld")}
	h.forge.runners["100"] = &fakeRunner{ref: forgeRef("100", "fa-test-0000000000aa")} // unrecorded
	h.forge.runners["101"] = &fakeRunner{ref: forgeRef("101", "fa-otherhost-x")}
	killed := map[int]string{}
	err := h.m.Recover(context.Background(), Leftovers{
		KillVM: func(_ context.Context, id string, pid int) error { killed[pid] = id; return nil },
		TAPs:   func() ([]string, error) { return []string{"fastray"}, nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	if killed[4242] != "0ld" {
		t.Fatalf("leftover monitor not killed: %v", killed)
	}
	if h.net.Count() != 0 {
		t.Fatalf("taps left: %v", h.net.TAPs)
	}
	if _, ok := h.forge.runners["101"]; !ok || h.forge.runnerCount() != 1 {
		t.Fatalf("runners after recovery: %v (another host's must stay, ours must go)", h.forge.runners)
	}
	if _, err := os.Stat(h.store.Dir("0ld")); !os.IsNotExist(err) {
		t.Fatal("leftover VM directory kept")
	}
}

func forgeRef(id, name string) forge.RunnerRef { return forge.RunnerRef{ID: id, Name: name} }

// Issue 23: host "test" restarted after a crash sweeps the runners a
// previous run of it left, and never the runners of host "test-b" (whose
// names start with "fa-test-"), busy or idle, nor a runner someone named
// after it by hand; the reconcile loop does not take them for its own
// either.
func TestRecoverAndReconcileLeaveTheRunnersOfAnotherHostWhoseIDStartsWithOurs(t *testing.T) {
	h := newHarness(t, 0, 1, guestRunsOneJob, nil)
	h.stop()
	<-h.done
	other, err := forge.NewOwner("test-b")
	if err != nil {
		t.Fatal(err)
	}
	mine := h.m.Owner().RunnerName("00000000a11e")
	theirs := map[string]string{ // id -> name
		"1": other.RunnerName("0000000000b1"),
		"2": other.RunnerName("0000000000b2"),
		"3": h.m.Owner().RunnerName("handmade"),
	}
	h.forge.runners["9"] = &fakeRunner{ref: forgeRef("9", mine)}
	for id, name := range theirs {
		h.forge.runners[id] = &fakeRunner{ref: forgeRef(id, name), busy: id == "1", job: "their-job"}
		if !strings.HasPrefix(name, "fa-test-") {
			t.Fatalf("control: %q does not start with host test's old prefix", name)
		}
	}
	if err := h.m.Recover(context.Background(), Leftovers{}); err != nil {
		t.Fatal(err)
	}
	if _, ok := h.forge.runners["9"]; ok {
		t.Fatalf("recovery left this host's own runner %s", mine)
	}
	for id, name := range theirs {
		if _, ok := h.forge.runners[id]; !ok {
			t.Errorf("recovery removed %s, not this host's runner", name)
		}
	}
	// The reconcile loop sees only its own runners: with none, it starts
	// nothing for another host's busy one and removes nothing.
	h.m.reconcile(context.Background())
	if n := h.forge.runnerCount(); n != len(theirs) {
		t.Fatalf("%d runners after a reconcile, want the other %d untouched", n, len(theirs))
	}
}

// leaveRunningVM stops the harness's manager and leaves what a previous
// run leaves of busy VM a1 of pool p, booting image ("": its initramfs):
// its record (agent token "tok"), TAP and forge runner. The machine is its
// monitor, for Leftovers.Adopt to return; finishAdoptedJob ends it.
func leaveRunningVM(t *testing.T, h *harness, image string) *fakeMachine {
	t.Helper()
	h.stop()
	<-h.done
	rec := &vmstate.Record{ID: "a1", Pool: "p", Phase: vmstate.Busy, PID: 4242, TAP: "faa1", Address: "10.200.0.9",
		MAC: "02:00:00:00:00:09", RunnerID: "5", RunnerName: "fa-test-a1", AgentToken: "tok",
		Ready: time.Now().Add(-time.Minute), Image: image}
	if err := h.store.Create(rec); err != nil {
		t.Fatal(err)
	}
	h.net.TAPs["faa1"] = true
	h.forge.runners["5"] = &fakeRunner{ref: forgeRef("5", "fa-test-a1"), busy: true}
	machine := &fakeMachine{done: make(chan struct{}), kill: make(chan struct{})}
	// A test that fails before finishAdoptedJob: the monitor exits before
	// the harness's drain (cleanups run last first), which would wait
	// for it until the test times out.
	t.Cleanup(func() {
		select {
		case <-machine.done:
		default:
			close(machine.done)
		}
	})
	return machine
}

// finishAdoptedJob ends the job of VM a1 left by leaveRunningVM: the agent
// reports, the guest powers off, the VM goes.
func finishAdoptedJob(t *testing.T, h *harness, machine *fakeMachine) {
	t.Helper()
	if err := h.m.Report("tok", agentproto.Report{VMID: "a1", Event: agentproto.EventRunnerExited}); err != nil {
		t.Fatal(err)
	}
	h.forge.finish("fa-test-a1", "j")
	close(machine.done)
	eventually(t, 2*time.Second, "the adopted VM to be gone", func() bool { return len(h.m.VMs()) == 0 })
}

func TestRecoverAdoptsARunningVMWhichThenFinishesItsJob(t *testing.T) {
	h := newHarness(t, 0, 1, guestRunsOneJob, nil)
	machine := leaveRunningVM(t, h, "")
	err := h.m.Recover(context.Background(), Leftovers{
		Adopt: func(id string, pid int) (vmm.Machine, error) {
			if id != "a1" || pid != 4242 {
				t.Errorf("adopt %s/%d", id, pid)
			}
			return machine, nil
		},
		TAPs: func() ([]string, error) { return []string{"faa1"}, nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	if h.net.Count() != 1 || h.forge.runnerCount() != 1 {
		t.Fatal("recovery removed the adopted VM's TAP or runner")
	}
	if h.net.Admitted["faa1"] != "02:00:00:00:00:09|10.200.0.9" {
		t.Fatal("the adopted VM was not admitted by the new rules")
	}
	if got, err := h.m.VM("a1"); err != nil || got.Phase != vmstate.Busy {
		t.Fatalf("adopted vm = %+v, %v", got, err)
	}
	if err := h.m.Report("wrong", agentproto.Report{VMID: "a1", Event: agentproto.EventRunnerExited}); err == nil {
		t.Fatal("a report with the wrong token was accepted")
	}
	finishAdoptedJob(t, h, machine)
	h.assertNothingLeft(t)
}

// TestRunnerDyingMidJobFailsItsJobAtTheForge: a runner that exits before
// its job ended has the forge fail that job (with the reason) as soon as
// its exit is reported, before the guest powers off and the runner is
// removed, and the jobs after it still run.
func TestRunnerDyingMidJobFailsItsJobAtTheForge(t *testing.T) {
	h := newHarness(t, 0, 1, guestRunsOneJob, nil)
	h.forge.enqueue(dyingJob + "j1")
	eventually(t, 20*time.Second, "j1 failed at the forge", func() bool { return h.forge.failedJobs()[dyingJob+"j1"] != "" })
	if reason := h.forge.failedJobs()[dyingJob+"j1"]; reason != "runner exit code 2" {
		t.Errorf("j1 failed with reason %q, want the runner's exit", reason)
	}
	// The guest notes what it saw before it powers off. (Another VM may
	// be starting meanwhile: a full pass that read the queue just before
	// the runner took j1 still counts j1 queued, as a forge's lagging
	// view would; it idles until j2 comes.)
	runner := h.forge.runnerOf(dyingJob + "j1")
	eventually(t, 20*time.Second, "j1's VM gone", func() bool {
		return !slices.ContainsFunc(h.m.VMs(), func(r vmstate.Record) bool { return r.RunnerName == runner })
	})
	h.hv.mu.Lock()
	early := slices.Clone(h.hv.failedBeforeOff)
	h.hv.mu.Unlock()
	if len(early) != 1 {
		t.Errorf("the job was failed only once its guest powered off, not when its runner's exit was reported")
	}
	h.forge.enqueue("j2")
	eventually(t, 20*time.Second, "j2 finished", func() bool {
		h.forge.mu.Lock()
		defer h.forge.mu.Unlock()
		return h.forge.finished["j2"] != ""
	})
	if failed := h.forge.failedJobs(); len(failed) != 1 {
		t.Errorf("jobs failed at the forge: %v; want j1 only", failed)
	}
	if err := h.drain(t, time.Second); err != nil {
		t.Fatal(err)
	}
	h.assertNothingLeft(t)
}

// A forge read that ends because the orchestrator stops (SIGTERM) is no
// forge failure: the pass ends without a warning about the forge.
func TestStoppingMidPassWarnsOfNoForgeFailure(t *testing.T) {
	var logs hosttest.SyncBuffer
	h := newHarnessForge(t, 0, 1, guestRunsOneJob, nil, slog.New(slog.NewTextHandler(&logs, nil)),
		func(f *fakeForge) forge.Forge { f.listDelay = time.Hour; return f })
	time.Sleep(200 * time.Millisecond) // a pass waits for the runners' listing
	h.stop()
	<-h.done
	if strings.Contains(logs.String(), "read runners") {
		t.Errorf("stopping mid-pass logged a forge failure:\n%s", logs.String())
	}
}
