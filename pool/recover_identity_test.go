package pool

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/config"
	"github.com/nixos-fireactions/nixos-fireactions/vmm"
	"github.com/nixos-fireactions/nixos-fireactions/vmstate"
)

// finderHV is a hypervisor that finds running monitors by VM id, as the
// QEMU driver does by the -name in their command line.
type finderHV struct {
	vmm.Hypervisor
	pids map[string]int
}

func (f *finderHV) FindMonitor(id string) (int, error) { return f.pids[id], nil }

// A crash after the monitor started and before its PID was recorded: the
// record has no PID, and recovery finds the monitor by the VM's id and
// kills it before removing its TAP, runner and directory.
func TestRecoverKillsAMonitorWhoseRecordHasNoPID(t *testing.T) {
	h := newHarness(t, 0, 1, guestRunsOneJob, nil)
	h.stop()
	<-h.done
	rec := &vmstate.Record{ID: "n0pid", Pool: "p", Phase: vmstate.Creating, TAP: "fan0pid",
		RunnerID: "7", RunnerName: "fa-test-n0pid"}
	if err := h.store.Create(rec); err != nil {
		t.Fatal(err)
	}
	h.net.TAPs["fan0pid"] = true
	h.forge.runners["7"] = &fakeRunner{ref: forgeRef("7", "fa-test-n0pid")}
	h.m.d.Hypervisor = &finderHV{Hypervisor: h.hv, pids: map[string]int{"n0pid": 5151}}
	killed := map[int]string{}
	err := h.m.Recover(context.Background(), Leftovers{
		KillVM: func(_ context.Context, id string, pid int) error { killed[pid] = id; return nil },
		TAPs:   func() ([]string, error) { return []string{"fan0pid"}, nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	if killed[5151] != "n0pid" {
		t.Fatalf("monitor found by its id not killed: killed %v", killed)
	}
	if h.net.Count() != 0 || h.forge.runnerCount() != 0 {
		t.Fatalf("taps %v, runners %v left", h.net.TAPs, h.forge.runners)
	}
	if _, err := os.Stat(h.store.Dir("n0pid")); !os.IsNotExist(err) {
		t.Fatal("the VM's directory kept")
	}
}

// A busy VM whose record lost its PID is adopted all the same: recovery
// finds its monitor by the VM's id.
func TestRecoverAdoptsAMonitorWhoseRecordHasNoPID(t *testing.T) {
	h := newHarness(t, 0, 1, guestRunsOneJob, nil)
	machine := leaveRunningVM(t, h, "")
	list, err := h.store.List()
	if err != nil || len(list) != 1 {
		t.Fatalf("list: %v %v", list, err)
	}
	rec := list[0]
	rec.PID = 0
	if err := h.store.Save(rec); err != nil {
		t.Fatal(err)
	}
	h.m.d.Hypervisor = &finderHV{Hypervisor: h.hv, pids: map[string]int{"a1": 6161}}
	err = h.m.Recover(context.Background(), Leftovers{
		Adopt: func(id string, pid int) (vmm.Machine, error) {
			if id != "a1" || pid != 6161 {
				t.Errorf("adopt %s/%d, want a1/6161", id, pid)
			}
			return machine, nil
		},
		KillVM: func(_ context.Context, id string, pid int) error {
			t.Errorf("killed %s/%d instead of adopting it", id, pid)
			return nil
		},
		TAPs: func() ([]string, error) { return []string{"faa1"}, nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := h.m.VM("a1"); err != nil || got.Phase != vmstate.Busy || got.PID != 6161 {
		t.Fatalf("adopted vm = %+v, %v", got, err)
	}
	finishAdoptedJob(t, h, machine)
	h.assertNothingLeft(t)
}

// Recovery removes the VM directories it made and nothing else under the
// state directory.
func TestRecoverRemovesOnlyDirectoriesItOwns(t *testing.T) {
	h := newHarness(t, 0, 1, guestRunsOneJob, nil)
	h.stop()
	<-h.done
	if err := h.store.Create(&vmstate.Record{ID: "0ld", Pool: "p", Phase: vmstate.Failed}); err != nil {
		t.Fatal(err)
	}
	base := filepath.Dir(h.store.Dir("0ld"))
	foreign := []string{"lost+found", "n0rec0rd", "Backup_2024"}
	for _, d := range foreign {
		if err := os.MkdirAll(filepath.Join(base, d), 0o700); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(base, d, "precious"), []byte("keep"), 0o600)
	}
	if err := h.m.Recover(context.Background(), Leftovers{}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(h.store.Dir("0ld")); !os.IsNotExist(err) {
		t.Fatal("the leftover VM's directory kept")
	}
	for _, d := range foreign {
		if _, err := os.Stat(filepath.Join(base, d, "precious")); err != nil {
			t.Errorf("recovery removed %s, which it did not make: %v", d, err)
		}
	}
}

// storeLosingHV closes the state store as each VM's monitor starts (a
// disk gone), so the record with the monitor's PID cannot be saved.
type storeLosingHV struct {
	vmm.Hypervisor
	store    *vmstate.Store
	mu       sync.Mutex
	machines []vmm.Machine
}

func (d *storeLosingHV) Start(ctx context.Context, spec vmm.Spec) (vmm.Machine, error) {
	m, err := d.Hypervisor.Start(ctx, spec)
	if err == nil {
		d.mu.Lock()
		d.machines = append(d.machines, m)
		d.mu.Unlock()
	}
	d.store.Close()
	return m, err
}

// A VM whose record cannot be saved once its monitor runs is not left
// booting unrecorded (a crash would orphan it): it is stopped at once.
func TestVMWhoseRecordCannotBeSavedIsStopped(t *testing.T) {
	h := newHarness(t, 0, 1, guestHangs, func(p *config.Pool) { p.Timeouts.Boot = time.Minute })
	hv := &storeLosingHV{Hypervisor: h.hv, store: h.store}
	h.m.d.Hypervisor = hv
	h.forge.enqueue("j")
	eventually(t, 3*time.Second, "the unrecorded VM's monitor killed", func() bool {
		hv.mu.Lock()
		defer hv.mu.Unlock()
		if len(hv.machines) == 0 {
			return false
		}
		select {
		case <-hv.machines[0].Done():
			return true
		default:
			return false
		}
	})
}

// A VM whose monitor survives recovery's kill (or whose monitor cannot be
// looked for) keeps its record and TAP for the next start, and its
// address too: while its monitor may still run, no new VM is handed it.
func TestRecoveryKeepsTheAddressOfAMonitorItCouldNotEnd(t *testing.T) {
	for _, c := range []struct {
		name   string
		pid    int
		finder bool
	}{{"kill failed", 4242, false}, {"monitor not looked for", 0, true}} {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t, 0, 1, guestRunsOneJob, nil)
			h.stop()
			<-h.done
			if err := h.store.Create(&vmstate.Record{ID: "5urv", Pool: "p", Phase: vmstate.Idle, PID: c.pid,
				TAP: "fa5urv", MAC: "02:00:00:00:00:02", Address: "10.200.0.2"}); err != nil {
				t.Fatal(err)
			}
			if c.finder {
				h.m.d.Hypervisor = &failingFinderHV{Hypervisor: h.hv}
			}
			err := h.m.Recover(context.Background(), Leftovers{
				Adopt:  func(string, int) (vmm.Machine, error) { return nil, errors.New("not adoptable") },
				KillVM: func(context.Context, string, int) error { return errors.New("still running after the kill") },
			})
			if err == nil {
				t.Fatal("Recover hid a monitor it could not end")
			}
			if _, err := os.Stat(h.store.Dir("5urv")); err != nil {
				t.Fatalf("record of a monitor that may run removed: %v", err)
			}
			for i := range 3 {
				ip, err := h.alloc.Allocate(fmt.Sprintf("n3w%d", i))
				if err != nil {
					t.Fatal(err)
				}
				if ip.String() == "10.200.0.2" {
					t.Fatalf("a new VM got the address of the monitor that may still run")
				}
			}
		})
	}
}

// A VM whose monitor may still run (it survived the kill, or could not
// be looked for) keeps its record, TAP and address, but not its runner:
// unsupervised, it could take jobs with no timeout. Its job is failed
// first, then the runner removed; a removal that fails is queued and,
// once the forge confirms, leaves the record in place.
func TestRecoveryRemovesTheRunnerOfAMonitorItCouldNotEnd(t *testing.T) {
	for _, c := range []struct {
		name   string
		pid    int
		finder bool
	}{{"kill failed", 4242, false}, {"monitor not looked for", 0, true}} {
		for _, down := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/forge down %v", c.name, down), func(t *testing.T) {
				h := newHarness(t, 0, 1, guestRunsOneJob, nil)
				h.stop()
				<-h.done
				name := "fa-test-5urv"
				if err := h.store.Create(&vmstate.Record{ID: "5urv", Pool: "p", Phase: vmstate.Busy, PID: c.pid,
					TAP: "fa5urv", MAC: "02:00:00:00:00:02", Address: "10.200.0.2",
					RunnerID: "7", RunnerName: name, Job: "j7", Busy: time.Now().UTC()}); err != nil {
					t.Fatal(err)
				}
				h.forge.mu.Lock()
				h.forge.runners["7"] = &fakeRunner{ref: forgeRef("7", name), busy: true, job: "j7"}
				if down {
					h.forge.removeErr = errors.New("forge unreachable")
				}
				h.forge.mu.Unlock()
				if c.finder {
					h.m.d.Hypervisor = &failingFinderHV{Hypervisor: h.hv}
				}
				err := h.m.Recover(context.Background(), Leftovers{
					Adopt:  func(string, int) (vmm.Machine, error) { return nil, errors.New("not adoptable") },
					KillVM: func(context.Context, string, int) error { return errors.New("still running after the kill") },
				})
				if err == nil {
					t.Fatal("Recover hid a monitor it could not end")
				}
				if got := h.forge.failedJobs()["j7"]; got == "" {
					t.Errorf("the unsupervised runner's job was not failed: %v", h.forge.failedJobs())
				}
				runnerLeft := func() bool {
					h.forge.mu.Lock()
					defer h.forge.mu.Unlock()
					_, ok := h.forge.runners["7"]
					return ok
				}
				if down {
					if !runnerLeft() {
						t.Fatal("control: the forge down removed the runner")
					}
					if got := h.m.PendingRemovals(); len(got) != 1 || got[0] != name {
						t.Fatalf("pending removals %v, want %s", got, name)
					}
					h.forge.mu.Lock()
					h.forge.removeErr = nil
					h.forge.mu.Unlock()
					h.m.removeDue(context.Background(), time.Now().Add(time.Hour))
					if got := h.m.PendingRemovals(); len(got) != 0 {
						t.Fatalf("pending removals %v after the forge confirmed", got)
					}
				}
				if runnerLeft() {
					t.Fatal("the runner of a vm whose monitor may still run is left registered at the forge")
				}
				recs := diskRecords(t, h.store)
				r, ok := recs["5urv"]
				if !ok || r.TAP != "fa5urv" || r.Address != "10.200.0.2" || r.Phase != vmstate.Busy {
					t.Fatalf("record of a monitor that may run: %v, want kept as it was", recs)
				}
			})
		}
	}
}

// A VM that ended while no orchestrator ran (a host reboot: its monitor
// is gone) after its runner took a job: the restart fails that job at the
// forge before it removes the runner, as teardown would have, so the job
// does not wait for the forge's own clean-up.
func TestRecoveryFailsTheJobOfAVMThatEndedWhileDown(t *testing.T) {
	h := newHarness(t, 0, 1, guestRunsOneJob, nil)
	h.stop()
	<-h.done
	name := "fa-test-9one"
	if err := h.store.Create(&vmstate.Record{ID: "9one", Pool: "p", Phase: vmstate.Busy, PID: 4242,
		TAP: "fa9one", MAC: "02:00:00:00:00:03", Address: "10.200.0.3",
		RunnerID: "9", RunnerName: name, Job: "j9", Busy: time.Now().UTC()}); err != nil {
		t.Fatal(err)
	}
	h.forge.mu.Lock()
	h.forge.runners["9"] = &fakeRunner{ref: forgeRef("9", name), busy: true, job: "j9"}
	h.forge.mu.Unlock()
	killed := false
	err := h.m.Recover(context.Background(), Leftovers{
		Adopt:  func(string, int) (vmm.Machine, error) { return nil, errors.New("no such process") },
		KillVM: func(context.Context, string, int) error { killed = true; return nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	if !killed {
		t.Fatal("control: the VM was not taken for one to remove")
	}
	if got := h.forge.failedJobs()["j9"]; got == "" {
		t.Errorf("the job of the VM that ended while down was not failed: %v", h.forge.failedJobs())
	}
	if h.forge.runnerCount() != 0 {
		t.Error("its runner is left at the forge")
	}
	if _, ok := diskRecords(t, h.store)["9one"]; ok {
		t.Error("its record is left")
	}
}

// failingFinderHV cannot look for a VM's monitor.
type failingFinderHV struct{ vmm.Hypervisor }

func (failingFinderHV) FindMonitor(id string) (int, error) {
	return 0, fmt.Errorf("look for vm %s's monitor: /proc unreadable", id)
}

// A template build is not recorded: a crash leaves its monitor running
// as its slot's user. Recovery finds it by the template's id, for a
// configured pool and for a pool with only a template directory left
// (removed while the daemon was down), and ends it before any VM is
// given a slot.
func TestRecoverEndsTheTemplateVMsAPreviousRunLeft(t *testing.T) {
	h := newHarness(t, 0, 1, guestRunsOneJob, nil)
	h.stop()
	<-h.done
	tdir := t.TempDir()
	if err := os.Mkdir(filepath.Join(tdir, "gone"), 0o700); err != nil {
		t.Fatal(err)
	}
	h.m.d.TemplateDir = tdir
	h.m.d.Hypervisor = &finderHV{Hypervisor: h.hv, pids: map[string]int{h.m.templateID("p"): 4242, h.m.templateID("gone"): 4343}}
	killed := map[int]string{}
	err := h.m.Recover(context.Background(), Leftovers{
		KillVM: func(_ context.Context, id string, pid int) error { killed[pid] = id; return nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	if killed[4242] != h.m.templateID("p") || killed[4343] != h.m.templateID("gone") {
		t.Fatalf("template monitors a crash left not ended: killed %v", killed)
	}
}

// A pool removed while the daemon was down leaves its template
// directory, and a crash may have left its template's monitor: New
// removes the directory, and Recover, after it, still ends that
// monitor (New tells it which pools' templates it removed).
func TestRecoverEndsTheTemplateVMOfAPoolRemovedWhileTheDaemonWasDown(t *testing.T) {
	tdir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(tdir, "gone", "build-1"), 0o700); err != nil {
		t.Fatal(err)
	}
	h := newHarnessDeps(t, time.Hour, t.TempDir(), 0, 1, guestRunsOneJob, nil, slog.New(slog.NewTextHandler(io.Discard, nil)), nil, nil,
		func(d *Deps) { d.TemplateDir = tdir })
	h.stop()
	<-h.done
	if _, err := os.Stat(filepath.Join(tdir, "gone")); err == nil {
		t.Fatal("New kept the template directory of a removed pool")
	}
	id := h.m.templateID("gone")
	h.m.d.Hypervisor = &finderHV{Hypervisor: h.hv, pids: map[string]int{id: 4343}}
	killed := map[int]string{}
	err := h.m.Recover(context.Background(), Leftovers{
		KillVM: func(_ context.Context, id string, pid int) error { killed[pid] = id; return nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	if killed[4343] != id {
		t.Fatalf("the template monitor of a removed pool not ended: killed %v", killed)
	}
}
