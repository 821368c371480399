package pool

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/config"
	"github.com/nixos-fireactions/nixos-fireactions/forge"
	"github.com/nixos-fireactions/nixos-fireactions/vmstate"
)

// notifyingForge is the fake forge telling its queue changes, as the
// GitHub driver does (forge.QueueNotifier), and counting full reads of
// its queue.
type notifyingForge struct {
	*fakeForge
	reads  atomic.Int64
	mu     sync.Mutex
	notify func(forge.QueueChange)
}

func (f *notifyingForge) QueuedJobs(ctx context.Context) ([]forge.Job, error) {
	f.reads.Add(1)
	return f.fakeForge.QueuedJobs(ctx)
}

func (f *notifyingForge) NotifyQueue(n func(forge.QueueChange)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.notify = n
}

func (f *notifyingForge) tell(id string, queued bool) {
	f.mu.Lock()
	n := f.notify
	f.mu.Unlock()
	n(forge.QueueChange{Job: forge.Job{ID: id, Labels: []string{"linux"}}, Queued: queued})
}

// A queue change the driver tells starts its VM at once, without a full
// pass (no read of the queue, no walk over every VM): the full pass runs
// once an hour here, and it ran once, at start.
func TestToldQueueChangeStartsAVMWithoutAFullPass(t *testing.T) {
	var nf *notifyingForge
	h := newHarnessEvery(t, time.Hour, filepath.Join(t.TempDir(), "vms"), 0, 3, guestHangs,
		func(pc *config.Pool) { pc.Timeouts.Boot = time.Hour },
		slog.New(slog.NewTextHandler(io.Discard, nil)), nil,
		func(f *fakeForge) forge.Forge { nf = &notifyingForge{fakeForge: f}; return nf })
	eventually(t, 5*time.Second, "the first full pass", func() bool { return nf.reads.Load() == 1 })
	started := func() int {
		h.hv.mu.Lock()
		defer h.hv.mu.Unlock()
		return h.hv.started
	}
	nf.tell("j1", true)
	eventually(t, 5*time.Second, "a VM for j1", func() bool { return started() == 1 })
	nf.tell("j1", true) // a repeat changes nothing
	nf.tell("j2", true)
	nf.tell("j3", true)
	nf.tell("j4", true) // beyond max
	eventually(t, 5*time.Second, "VMs for j2 and j3", func() bool { return started() == 3 })
	p := h.m.pools[0]
	h.m.mu.Lock()
	queued := p.queued
	h.m.mu.Unlock()
	if queued != 4 {
		t.Fatalf("queued %d, want 4", queued)
	}
	if c, starting := p.counted(); c.unbusy != 3 || starting != 3 || c.busy != 0 {
		t.Fatalf("counted %+v starting %d, want 3 starting", c, starting)
	}
	if n := nf.reads.Load(); n != 1 {
		t.Fatalf("the queue was read %d times: a full pass ran", n)
	}
	if started() != 3 {
		t.Fatalf("%d VMs started for 3 jobs within max 3", started())
	}
	nf.tell("j1", false)
	eventually(t, 5*time.Second, "j1 out of the queue", func() bool {
		h.m.mu.Lock()
		defer h.m.mu.Unlock()
		return p.queued == 3
	})
}

// Queue changes told together wake the manager once, and it takes them
// all, in order.
func TestToldChangesCoalesceIntoOneWakeUp(t *testing.T) {
	in := newDemandInbox()
	for i := 0; i < 100; i++ {
		in.tell(demandEvent{key: "k", change: forge.QueueChange{Job: forge.Job{ID: string(rune('a' + i%26))}, Queued: i%2 == 0}})
	}
	if n := len(in.wake); n != 1 {
		t.Fatalf("%d wake-ups pending for 100 changes, want 1", n)
	}
	<-in.wake
	evs := in.take()
	if len(evs) != 100 || evs[0].change.Job.ID != "a" || evs[99].change.Job.ID != string(rune('a'+99%26)) || evs[1].change.Queued {
		t.Fatalf("took %d events, out of order or changed", len(evs))
	}
	if again := in.take(); len(again) != 0 {
		t.Fatalf("took %d events twice", len(again))
	}
}

// The per-pool counts a queue change decides from follow every VM
// through its phases: starting, idle, busy, gone.
func TestPoolCountsFollowTheVMs(t *testing.T) {
	h := newHarness(t, 0, 2, guestRunsOneJob, nil)
	h.hv.jobTime = time.Hour
	p := h.m.pools[0]
	counted := func() (busy, idle, starting int64) { return p.nBusy.Load(), p.nIdle.Load(), p.nStarting.Load() }
	byPhase := func() (busy, idle, starting int64) {
		for _, r := range h.m.VMs() {
			switch r.Phase {
			case vmstate.Busy:
				busy++
			case vmstate.Idle:
				idle++
			case vmstate.Creating, vmstate.Booting:
				starting++
			}
		}
		return
	}
	h.forge.enqueue("a", "b")
	eventually(t, 10*time.Second, "two busy VMs", func() bool {
		b, i, s := counted()
		return b == 2 && i == 0 && s == 0
	})
	if b, i, s := byPhase(); b != 2 || i != 0 || s != 0 {
		t.Fatalf("records say busy %d idle %d starting %d", b, i, s)
	}
	if err := h.drain(t, 100*time.Millisecond); err == nil {
		t.Fatal("drain ended no busy VM")
	}
	if b, i, s := counted(); b != 0 || i != 0 || s != 0 {
		t.Fatalf("after the drain: counted busy %d idle %d starting %d", b, i, s)
	}
}

// A VM that ends has its pool looked at again at once, without a full
// pass: the VM min_idle keeps is replaced, and the queue is not read.
func TestAVMThatEndsIsReplacedWithoutAFullPass(t *testing.T) {
	var nf *notifyingForge
	h := newHarnessEvery(t, time.Hour, filepath.Join(t.TempDir(), "vms"), 1, 2, guestRunsOneJob, nil,
		slog.New(slog.NewTextHandler(io.Discard, nil)), nil,
		func(f *fakeForge) forge.Forge { nf = &notifyingForge{fakeForge: f}; return nf })
	started := func() int {
		h.hv.mu.Lock()
		defer h.hv.mu.Unlock()
		return h.hv.started
	}
	p := h.m.pools[0]
	eventually(t, 5*time.Second, "the min_idle VM ready", func() bool { return p.nIdle.Load() == 1 })
	if n := nf.reads.Load(); n != 1 {
		t.Fatalf("the queue was read %d times before the job", n)
	}
	h.forge.enqueue("j1") // taken by the idle VM's runner; the forge tells nothing
	eventually(t, 5*time.Second, "a second VM, replacing the first", func() bool { return started() == 2 })
	if n := nf.reads.Load(); n != 1 {
		t.Fatalf("the queue was read %d times: a full pass ran", n)
	}
}

// A VM that turns busy has its pool looked at again at once, without a
// full pass: min_idle gets its idle VM back while the job runs.
func TestAVMThatTurnsBusyIsBackedByAnIdleOneWithoutAFullPass(t *testing.T) {
	var nf *notifyingForge
	h := newHarnessEvery(t, time.Hour, filepath.Join(t.TempDir(), "vms"), 1, 2, guestRunsOneJob, nil,
		slog.New(slog.NewTextHandler(io.Discard, nil)), nil,
		func(f *fakeForge) forge.Forge { nf = &notifyingForge{fakeForge: f}; return nf })
	h.hv.jobTime = time.Hour
	p := h.m.pools[0]
	eventually(t, 5*time.Second, "the min_idle VM ready", func() bool { return p.nIdle.Load() == 1 })
	h.forge.enqueue("j1")
	eventually(t, 5*time.Second, "one VM busy and one idle", func() bool { return p.nBusy.Load() == 1 && p.nIdle.Load() == 1 })
	if n := nf.reads.Load(); n != 1 {
		t.Fatalf("the queue was read %d times: a full pass ran", n)
	}
}

// A VM that takes a job turns busy, and later ends, before the pool's
// queue is read again: the queue read still counts that job. The pool
// counts the jobs its VMs took since the read against it, so no VM is
// started for the job that is gone (a spare VM would idle until its idle
// timeout), and no extra full pass (a queue and runner read at the forge
// per ended VM) is needed for it.
func TestAVMThatTookItsJobSinceTheQueueWasReadStartsNoSpare(t *testing.T) {
	for _, job := range []string{"j1", dyingJob + "j1"} {
		t.Run(job, func(t *testing.T) {
			// One full pass at the start, then none for an hour: only
			// events move the pool.
			var reads *readCountingForge
			h := newHarnessEvery(t, time.Hour, filepath.Join(t.TempDir(), "vms"), 0, 3, guestRunsOneJob,
				func(p *config.Pool) { p.Timeouts.Idle = time.Hour }, slog.New(slog.NewTextHandler(io.Discard, nil)), nil,
				func(f *fakeForge) forge.Forge { reads = &readCountingForge{fakeForge: f}; return reads })
			h.hv.jobTime = 200 * time.Millisecond
			eventually(t, 20*time.Second, "the first full pass", func() bool { return reads.reads.Load() == 1 })
			h.forge.enqueue(job)
			h.m.Kick()
			eventually(t, 20*time.Second, "the job taken", func() bool { return h.forge.runnerOf(job) != "" })
			eventually(t, 20*time.Second, "every VM gone", func() bool { return len(h.m.VMs()) == 0 })
			h.hv.mu.Lock()
			started := len(h.hv.machines)
			h.hv.mu.Unlock()
			if started != 1 {
				t.Fatalf("%d VMs started for one job", started)
			}
			if n := reads.reads.Load(); n != 2 {
				t.Fatalf("the queue was read %d times: want the first pass and the kick's only", n)
			}
		})
	}
}

// readCountingForge counts full reads of the fake forge's queue; it does
// not tell queue changes.
type readCountingForge struct {
	*fakeForge
	reads atomic.Int64
}

func (f *readCountingForge) QueuedJobs(ctx context.Context) ([]forge.Job, error) {
	f.reads.Add(1)
	return f.fakeForge.QueuedJobs(ctx)
}

// A told forge may tell that a job left its queue only after the VM that
// ran it is gone (Gitea delivers its in_progress webhook late): the
// ended VM, which took a job, has its pool looked at for min_idle only,
// so no spare VM starts for the job it ran (it would idle until its idle
// timeout). The full pass, reading the queue, stays the authority.
func TestAVMThatRanItsJobBeforeTheForgeToldItLeftStartsNoSpare(t *testing.T) {
	var nf *notifyingForge
	h := newHarnessEvery(t, time.Hour, filepath.Join(t.TempDir(), "vms"), 0, 3, guestRunsOneJob,
		func(p *config.Pool) { p.Timeouts.Idle = time.Hour }, slog.New(slog.NewTextHandler(io.Discard, nil)), nil,
		func(f *fakeForge) forge.Forge { nf = &notifyingForge{fakeForge: f}; return nf })
	h.hv.jobTime = 200 * time.Millisecond
	eventually(t, 20*time.Second, "the first full pass", func() bool { return nf.reads.Load() == 1 })
	h.forge.enqueue("j1")
	nf.tell("j1", true)
	eventually(t, 20*time.Second, "the job taken", func() bool { return h.forge.runnerOf("j1") != "" })
	var first string
	for _, r := range h.m.VMs() {
		first = r.ID
	}
	eventually(t, 20*time.Second, "the job's VM gone", func() bool {
		_, err := h.m.VM(first)
		return err != nil
	})
	if started := machinesAfterAWhile(h); started != 1 {
		t.Fatalf("%d VMs started for one job whose leaving the forge had not told yet", started)
	}
	nf.tell("j1", false)
}

// The other side of the count: a job the forge told gone is not counted
// again. A pool at max with a second job waiting starts its VM as soon as
// the first job's VM is gone, without a full pass.
func TestAJobWaitingForRoomGetsTheEndedVMsPlaceAtOnce(t *testing.T) {
	var nf *notifyingForge
	h := newHarnessEvery(t, time.Hour, filepath.Join(t.TempDir(), "vms"), 0, 1, guestRunsOneJob,
		func(p *config.Pool) { p.Timeouts.Idle = time.Hour }, slog.New(slog.NewTextHandler(io.Discard, nil)), nil,
		func(f *fakeForge) forge.Forge { nf = &notifyingForge{fakeForge: f}; return nf })
	h.hv.jobTime = time.Second
	eventually(t, 20*time.Second, "the first full pass", func() bool { return nf.reads.Load() == 1 })
	h.forge.enqueue("j1")
	nf.tell("j1", true)
	eventually(t, 20*time.Second, "j1 taken", func() bool { return h.forge.runnerOf("j1") != "" })
	h.forge.enqueue("j2")
	nf.tell("j2", true)
	nf.tell("j1", false)
	eventually(t, 20*time.Second, "j2 taken by a second VM", func() bool { return h.forge.runnerOf("j2") != "" })
	if n := nf.reads.Load(); n != 1 {
		t.Fatalf("the queue was read %d times: a full pass ran", n)
	}
}

// laggingForge is the notifying fake whose reads still list the jobs in
// stale after a runner took them, as a scale set's statistics or a
// forge's API lag the runners.
type laggingForge struct {
	*notifyingForge
	smu   sync.Mutex
	stale []forge.Job
}

func (f *laggingForge) QueuedJobs(ctx context.Context) ([]forge.Job, error) {
	jobs, err := f.notifyingForge.QueuedJobs(ctx)
	f.smu.Lock()
	defer f.smu.Unlock()
	return append(jobs, f.stale...), err
}

// A full pass whose read still lists a job a VM of the pool took (the
// forge has not told it gone) starts no VM for it.
func TestAFullPassReadingALaggingQueueStartsNoSpare(t *testing.T) {
	var lf *laggingForge
	h := newHarnessEvery(t, time.Hour, filepath.Join(t.TempDir(), "vms"), 0, 3, guestRunsOneJob,
		func(p *config.Pool) { p.Timeouts.Idle = time.Hour }, slog.New(slog.NewTextHandler(io.Discard, nil)), nil,
		func(f *fakeForge) forge.Forge {
			lf = &laggingForge{notifyingForge: &notifyingForge{fakeForge: f}}
			return lf
		})
	h.hv.jobTime = time.Hour
	p := h.m.pools[0]
	eventually(t, 20*time.Second, "the first full pass", func() bool { return lf.reads.Load() == 1 })
	lf.smu.Lock()
	lf.stale = []forge.Job{{ID: "j1", Labels: []string{"linux"}}}
	lf.smu.Unlock()
	h.forge.enqueue("j1")
	lf.tell("j1", true)
	eventually(t, 20*time.Second, "the VM busy with j1", func() bool { return p.nBusy.Load() == 1 })
	h.m.Kick()
	eventually(t, 20*time.Second, "a full pass", func() bool { return lf.reads.Load() >= 2 })
	if started := machinesAfterAWhile(h); started != 1 {
		t.Fatalf("%d VMs started: the lagging read's job counted though a VM took it", started)
	}
}

// machinesAfterAWhile is how many VMs the fake VMM started, once a spare
// VM, if any, would have started (at once, on the event).
func machinesAfterAWhile(h *harness) int {
	time.Sleep(300 * time.Millisecond)
	h.hv.mu.Lock()
	defer h.hv.mu.Unlock()
	return len(h.hv.machines)
}
