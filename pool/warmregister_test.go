package pool

import (
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/forge"
)

// TestARestoresMonitorStartsBeforeItsRunnerIsRegistered: a restored
// VM's monitor is started before the forge is asked for its runner, so
// the monitor's own start runs while the forge answers; the guest gets
// the registered runner's credential afterwards, with its identity.
func TestARestoresMonitorStartsBeforeItsRunnerIsRegistered(t *testing.T) {
	var mu sync.Mutex
	var seen []int // restores started as each registration began
	r := newWarmRig(t, 0, 1, t.TempDir(), "", func(d *Deps) {
		h := d.Hypervisor.(*fakeHV)
		h.forge.onRegister = func(forge.RunnerSpec) {
			h.mu.Lock()
			n := 0
			for _, s := range h.specs {
				if s.Restore != "" {
					n++
				}
			}
			h.mu.Unlock()
			mu.Lock()
			seen = append(seen, n)
			mu.Unlock()
		}
	})
	r.waitBuilds(t, 1)
	r.runJobs(t, "j1", "j2")
	mu.Lock()
	got := slices.Clone(seen)
	mu.Unlock()
	if want := []int{1, 2}; !slices.Equal(got, want) {
		t.Errorf("restores started as each runner's registration began: %v; want %v (each VM's monitor first)", got, want)
	}
	r.hv.mu.Lock()
	ids := slices.Clone(r.hv.identities)
	r.hv.mu.Unlock()
	for _, id := range ids {
		if len(id.Config.Runner.Files) == 0 {
			t.Errorf("the identity of %s carries no runner credential", id.Config.VMID)
		}
	}
	if err := r.drain(t, time.Second); err != nil {
		t.Fatal(err)
	}
	r.assertNothingLeft(t)
}

// TestARestoreWhoseRunnerIsNotRegisteredIsKilled: when the forge refuses
// the runner, the restore started for it is killed and its template build
// released (no restore holds a build once all ended); nothing of the VM
// is left, and the template serves the next.
func TestARestoreWhoseRunnerIsNotRegisteredIsKilled(t *testing.T) {
	r := newWarmRig(t, 0, 1, t.TempDir(), "")
	r.waitBuilds(t, 1)
	r.forge.mu.Lock()
	r.forge.failReg = true
	r.forge.mu.Unlock()
	r.forge.enqueue("j1")
	eventually(t, 5*time.Second, "a restore started for a runner the forge refuses", func() bool { return len(r.restoredSpecs()) >= 1 })
	eventually(t, 5*time.Second, "the refused VM's restore killed", func() bool {
		r.hv.mu.Lock()
		defer r.hv.mu.Unlock()
		return r.hv.running == 0
	})
	r.forge.mu.Lock()
	r.forge.failReg = false
	r.forge.mu.Unlock()
	r.waitFinished(t, 1)
	if n := r.hv.restores.Load(); n != 1 {
		t.Errorf("%d restores handed their identity; want 1, the job's VM after the forge came back", n)
	}
	if err := r.drain(t, time.Second); err != nil {
		t.Fatal(err)
	}
	r.assertNothingLeft(t)
	w := r.warmPool(t)
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.refs) != 0 {
		t.Errorf("template builds still held by restores that ended: %v", w.refs)
	}
}

// A restore's guest is resumed while its runner is registered, not
// after: its first run after the restore (translated afresh under
// emulation, ~130 ms here) goes beside the forge's answer. Only its
// identity waits for the runner.
func TestARestoresGuestResumesWhileItsRunnerIsRegistered(t *testing.T) {
	var mu sync.Mutex
	var resumed []bool // whether the VM's restore was resumed as its registration ended
	r := newWarmRig(t, 0, 1, t.TempDir(), "", func(d *Deps) {
		h := d.Hypervisor.(*fakeHV)
		h.forge.onRegister = func(forge.RunnerSpec) {
			// The forge answers once the restore is resumed, or late.
			h.mu.Lock()
			last := h.machines[len(h.machines)-1]
			h.mu.Unlock()
			for end := time.Now().Add(5 * time.Second); !last.resumed.Load() && time.Now().Before(end); {
				time.Sleep(5 * time.Millisecond)
			}
			mu.Lock()
			resumed = append(resumed, last.spec.Restore != "" && last.resumed.Load())
			mu.Unlock()
		}
	})
	r.waitBuilds(t, 1)
	r.runJobs(t, "j1")
	mu.Lock()
	got := slices.Clone(resumed)
	mu.Unlock()
	if !slices.Equal(got, []bool{true}) {
		t.Errorf("restores resumed as their runner's registration ended: %v; want [true]", got)
	}
	if err := r.drain(t, time.Second); err != nil {
		t.Fatal(err)
	}
	r.assertNothingLeft(t)
}
