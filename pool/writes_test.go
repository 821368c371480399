package pool

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
	"github.com/nixos-fireactions/nixos-fireactions/config"
	"github.com/nixos-fireactions/nixos-fireactions/vmm"
	"github.com/nixos-fireactions/nixos-fireactions/vmstate"
)

// writeCounter counts the records the store writes, by VM id and phase.
type writeCounter struct {
	mu     sync.Mutex
	byVM   map[string]int
	phases map[string][]vmstate.Phase
	last   map[string]vmstate.Record // the last record written, by VM id
}

func countWrites(s *vmstate.Store) *writeCounter {
	c := &writeCounter{byVM: map[string]int{}, phases: map[string][]vmstate.Phase{}, last: map[string]vmstate.Record{}}
	s.OnWrite(func(r *vmstate.Record) {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.byVM[r.ID]++
		c.phases[r.ID] = append(c.phases[r.ID], r.Phase)
		c.last[r.ID] = *r
	})
	return c
}

// Issue 22: a VM's whole life — created, booted, ready, one job, gone —
// writes its record (each write durable) at most 4 times: once before its
// monitor starts, once when it runs, at ready and at busy. It was 9
// (create, address, runner id, booting, ready, job id, busy, exit code,
// done). Both ways a VM turns busy count: its agent's job-started report
// (the forge without a busy flag, so the report is the only way) and the
// forge's busy flag alone (the report lost). Both ways in turn — the
// forge's busy flag first, the report with the job's id after — take a
// fifth write: the job's id, which the busy flag does not carry.
func TestAVMLifeWritesItsRecordAtMostFourTimes(t *testing.T) {
	t.Run("agent reports the job", func(t *testing.T) {
		h := newHarness(t, 0, 1, guestRunsOneJob, nil)
		h.forge.mu.Lock()
		h.forge.noBusyFlag = true // the report is the only way to busy
		h.forge.mu.Unlock()
		c := countWrites(h.store)
		h.forge.enqueue("j1", "j2", "j3")
		eventually(t, 20*time.Second, "3 jobs finished", func() bool {
			h.forge.mu.Lock()
			defer h.forge.mu.Unlock()
			return len(h.forge.finished) == 3
		})
		eventually(t, 20*time.Second, "the VMs gone", func() bool { return len(h.m.VMs()) == 0 })
		c.check(t, 3)
		h.assertNothingLeft(t)
	})
	t.Run("forge's busy flag alone", func(t *testing.T) {
		h := newHarness(t, 0, 3, guestRunsOneJob, func(p *config.Pool) { p.Timeouts.Job = time.Hour })
		h.hv.jobTime = time.Hour // busy until the drain ends them
		c := countWrites(h.store)
		h.forge.enqueue(silentJob+"1", silentJob+"2", silentJob+"3")
		eventually(t, 20*time.Second, "3 busy records on disk", func() bool {
			n := 0
			for _, r := range diskRecords(t, h.store) {
				if r.Phase == vmstate.Busy {
					n++
				}
			}
			return n == 3
		})
		h.drain(t, 0) // ends the busy VMs: their whole lives are counted
		c.check(t, 3)
		h.assertNothingLeft(t)
	})
	t.Run("busy flag, then the agent's report", func(t *testing.T) {
		h := newHarness(t, 0, 1, guestRunsOneJob, func(p *config.Pool) { p.Timeouts.Job = time.Hour })
		h.hv.jobTime = time.Hour // busy until the drain ends it
		c := countWrites(h.store)
		job := silentJob + "late" // the guest reports nothing: the test does, late
		h.forge.enqueue(job)
		var rec vmstate.Record
		eventually(t, 20*time.Second, "a busy record on disk, from the busy flag", func() bool {
			for _, r := range diskRecords(t, h.store) {
				if r.Phase == vmstate.Busy {
					rec = r
					return true
				}
			}
			return false
		})
		if rec.Job != "" {
			t.Fatalf("control: the busy flag alone wrote job id %q", rec.Job)
		}
		cfg := h.boot.Config(rec.ID)
		if err := h.m.Report(cfg.Report.Token, agentproto.Report{VMID: cfg.VMID, Event: agentproto.EventJobStarted, Job: job}); err != nil {
			t.Fatal(err)
		}
		eventually(t, 20*time.Second, "the job's id on disk", func() bool {
			return diskRecords(t, h.store)[rec.ID].Job == job
		})
		h.drain(t, 0)
		c.checkAtMost(t, 1, 5)
		c.mu.Lock()
		last := c.last[rec.ID]
		c.mu.Unlock()
		if last.Phase != vmstate.Busy || last.Job != job {
			t.Errorf("last record written: phase %q, job %q; want busy with job %q", last.Phase, last.Job, job)
		}
		h.assertNothingLeft(t)
	})
}

// check fails t unless vms VMs had their records written, each at most
// 4 times, the last one busy.
func (c *writeCounter) check(t *testing.T, vms int) {
	t.Helper()
	c.checkAtMost(t, vms, 4)
}

// checkAtMost fails t unless vms VMs had their records written, each at
// most most times, the last one busy.
func (c *writeCounter) checkAtMost(t *testing.T, vms, most int) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.byVM) != vms {
		t.Fatalf("records of %d VMs written, want %d: %v", len(c.byVM), vms, c.phases)
	}
	for id, n := range c.byVM {
		if n > most {
			t.Errorf("vm %s: its record written %d times (%v), want at most %d", id, n, c.phases[id], most)
		}
		if ph := c.phases[id]; ph[len(ph)-1] != vmstate.Busy {
			t.Errorf("vm %s: last record written %q, want busy: %v", id, ph[len(ph)-1], ph)
		}
	}
}

// Issue 22: the reconcile pass in which VMs turn busy (their forge says
// so) writes no file: it marks them busy in memory and their own
// goroutines save their records. With every write held, the pass still
// ends; once writes go on, every record on disk says busy.
func TestReconcilePassTurningVMsBusyWaitsForNoWrite(t *testing.T) {
	h := newHarness(t, 0, 3, guestRunsOneJob, func(p *config.Pool) { p.Timeouts.Job = time.Hour })
	h.hv.jobTime = time.Hour
	h.forge.mu.Lock()
	h.forge.hold = true // runners stay idle until told
	h.forge.mu.Unlock()
	h.forge.enqueue("j1", "j2", "j3")
	eventually(t, 20*time.Second, "3 VMs idle", func() bool { return h.m.Phases()[vmstate.Idle] == 3 })
	h.stop() // the test runs the passes
	<-h.done

	release := make(chan struct{})
	var once sync.Once
	defer once.Do(func() { close(release) })
	h.store.OnWrite(func(*vmstate.Record) { <-release })
	h.forge.mu.Lock()
	for _, r := range h.forge.runners {
		r.busy = true
	}
	h.forge.queue = nil
	h.forge.mu.Unlock()

	passed := make(chan struct{})
	go func() {
		h.m.reconcile(context.Background())
		close(passed)
	}()
	select {
	case <-passed:
	case <-time.After(10 * time.Second): // a guard: the pass waits for a held write
		t.Fatal("the reconcile pass did not end while state writes were held: it writes records itself")
	}
	if n := h.m.Phases()[vmstate.Busy]; n != 3 {
		t.Fatalf("%d VMs busy after the pass, want 3", n)
	}
	once.Do(func() { close(release) })
	eventually(t, 20*time.Second, "3 busy records on disk", func() bool {
		n := 0
		for _, r := range diskRecords(t, h.store) {
			if r.Phase == vmstate.Busy {
				n++
			}
		}
		return n == 3
	})
}

// startWatcher is the fake hypervisor, noting at each Start how many
// records of the VM were written so far and the record on disk.
type startWatcher struct {
	*fakeHV
	c     *writeCounter
	store *vmstate.Store
	mu    sync.Mutex
	seen  map[string]startSeen // by VM id
}

type startSeen struct {
	writes int
	rec    *vmstate.Record
}

func (w *startWatcher) Start(ctx context.Context, spec vmm.Spec) (vmm.Machine, error) {
	w.c.mu.Lock()
	n := w.c.byVM[spec.ID]
	w.c.mu.Unlock()
	var rec *vmstate.Record
	recs, _ := w.store.List()
	for _, r := range recs {
		if r.ID == spec.ID {
			rec = r
		}
	}
	w.mu.Lock()
	w.seen[spec.ID] = startSeen{writes: n, rec: rec}
	w.mu.Unlock()
	return w.fakeHV.Start(ctx, spec)
}

// Issue 22: one durable write before a VM's monitor starts (it was 3:
// create, address, runner id). That one record, on disk before the
// runner is registered and before the monitor starts, names everything
// recovery needs to clean up after a crash at any point up to the next
// write: the address, TAP, MAC, agent token and runner name.
func TestOneRecordWriteBeforeTheMonitorStarts(t *testing.T) {
	h := newHarness(t, 0, 1, guestRunsOneJob, nil)
	w := &startWatcher{fakeHV: h.hv, c: countWrites(h.store), store: h.store, seen: map[string]startSeen{}}
	h.m.d.Hypervisor = w
	h.forge.enqueue("j1", "j2")
	eventually(t, 20*time.Second, "2 jobs finished", func() bool {
		h.forge.mu.Lock()
		defer h.forge.mu.Unlock()
		return len(h.forge.finished) == 2
	})
	eventually(t, 20*time.Second, "the VMs gone", func() bool { return len(h.m.VMs()) == 0 })
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.seen) != 2 {
		t.Fatalf("%d monitors started, want 2", len(w.seen))
	}
	for id, s := range w.seen {
		if s.writes != 1 {
			t.Errorf("vm %s: %d record writes before its monitor started, want 1", id, s.writes)
		}
		r := s.rec
		if r == nil {
			t.Errorf("vm %s: no record on disk when its monitor started", id)
			continue
		}
		if r.Phase != vmstate.Creating || r.Address == "" || r.TAP == "" || r.MAC == "" || r.AgentToken == "" || r.RunnerName == "" {
			t.Errorf("vm %s: record on disk at its monitor's start %+v, want creating with address, TAP, MAC, token and runner name", id, *r)
		}
	}
	h.assertNothingLeft(t)
}

// Issue 22: a crash right after a VM's monitor started, before its second
// write, leaves the record written before the monitor started (no PID,
// no runner id). Recovery, from that very record, finds the monitor by
// the VM's identity and ends it (not adopting a VM whose runner it does
// not know), removes its TAP and directory, and its runner at the forge
// by its name.
func TestRecoverCleansUpAfterACrashBeforeTheSecondWrite(t *testing.T) {
	// The record on disk as the monitor starts, from a real VM's life.
	first := newHarness(t, 0, 1, guestHangs, func(p *config.Pool) { p.Timeouts.Boot = time.Minute })
	w := &startWatcher{fakeHV: first.hv, c: countWrites(first.store), store: first.store, seen: map[string]startSeen{}}
	first.m.d.Hypervisor = w
	first.forge.enqueue("j1")
	var rec *vmstate.Record
	eventually(t, 20*time.Second, "a monitor started", func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		for _, s := range w.seen {
			rec = s.rec
		}
		return rec != nil
	})
	if rec.PID != 0 || rec.RunnerID != "" {
		t.Fatalf("control: the record at the monitor's start has PID %d, runner id %q; want neither", rec.PID, rec.RunnerID)
	}

	// The next start, on a host where that VM's monitor, TAP and runner
	// are left.
	h := newHarness(t, 0, 1, guestRunsOneJob, nil)
	h.stop()
	<-h.done
	left := *rec
	if err := h.store.Create(&left); err != nil {
		t.Fatal(err)
	}
	h.net.TAPs[rec.TAP] = true
	h.forge.runners["7"] = &fakeRunner{ref: forgeRef("7", h.m.Owner().RunnerName(rec.ID))}
	h.m.d.Hypervisor = &finderHV{Hypervisor: h.hv, pids: map[string]int{rec.ID: 5151}}
	killed := map[int]string{}
	err := h.m.Recover(context.Background(), Leftovers{
		Adopt: func(id string, pid int) (vmm.Machine, error) {
			t.Errorf("adopted %s/%d, whose runner its record does not know", id, pid)
			return nil, context.Canceled
		},
		KillVM: func(_ context.Context, id string, pid int) error { killed[pid] = id; return nil },
		TAPs:   func() ([]string, error) { return []string{rec.TAP}, nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	if killed[5151] != rec.ID {
		t.Errorf("the monitor found by its id not killed: killed %v", killed)
	}
	if h.net.Count() != 0 || h.forge.runnerCount() != 0 {
		t.Errorf("taps %v, runners %d left", h.net.TAPs, h.forge.runnerCount())
	}
	if recs, _ := h.store.List(); len(recs) != 0 {
		t.Errorf("records left: %+v", recs)
	}
}
