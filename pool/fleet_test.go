package pool

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/fleet"
	"github.com/nixos-fireactions/nixos-fireactions/fleet/fleettest"
	"github.com/nixos-fireactions/nixos-fireactions/forge"
)

// twoHosts are two managers (hosts a and b) serving one pool of one
// forge, each of max VMs, in a fleet at natsURL ("": no fleet). The
// forge holds its jobs queued (its runners find none), so what each host
// starts is what it counts as its demand, whatever the timing: it
// returns how many VMs each started once jobs were queued and the
// hosts had a second to react.
func twoHosts(t *testing.T, natsURL string, jobs, max int) (started [2]int) {
	shared := newFakeForge()
	shared.hold = true
	var hs [2]*harness
	for i, id := range []string{"a", "b"} {
		var cl Claimer
		if natsURL != "" {
			f, err := fleet.Join(t.Context(), fleet.Options{URLs: []string{natsURL}, TokenFile: fleettest.TokenFile(t), HostID: id, ClaimTTL: 5 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { f.Close(context.Background()) })
			cl = f
		}
		h := newHarnessDeps(t, 10*time.Millisecond, t.TempDir(), 0, max, guestRunsOneJob, nil,
			slog.New(slog.DiscardHandler), nil,
			func(*fakeForge) forge.Forge { return shared },
			func(d *Deps) { d.Config.HostID, d.Fleet = id, cl })
		h.hv.forge, h.forge = shared, shared
		hs[i] = h
	}
	for i := range jobs {
		shared.enqueue(fmt.Sprintf("j%d", i))
	}
	time.Sleep(time.Second)
	for i, h := range hs {
		h.hv.mu.Lock()
		started[i] = h.hv.started
		h.hv.mu.Unlock()
	}
	return started
}

// Two hosts that each see every queued job start one VM per job between
// them in a fleet; without one (the control) each starts a VM for every
// job it sees.
func TestFleetStartsOneVMPerJob(t *testing.T) {
	const jobs = 6
	got := twoHosts(t, fleettest.RunNATS(t), jobs, jobs)
	if got[0]+got[1] != jobs {
		t.Errorf("in a fleet: hosts started %d + %d VMs for %d jobs; want %d in all", got[0], got[1], jobs, jobs)
	}
	alone := twoHosts(t, "", jobs, jobs)
	if alone != [2]int{jobs, jobs} {
		t.Errorf("control without a fleet: hosts started %v VMs for %d jobs; want %d each (each sees every job)", alone, jobs, jobs)
	}
	t.Logf("VMs started for %d jobs: fleet %v, no fleet %v", jobs, got, alone)
}

// A host whose pool is full claims nothing more: with two hosts of 3
// VMs and 6 jobs, each serves 3.
func TestFleetFullHostLeavesJobsToOthers(t *testing.T) {
	got := twoHosts(t, fleettest.RunNATS(t), 6, 3)
	if got != [2]int{3, 3} {
		t.Errorf("hosts of 3 VMs each started %v VMs for 6 jobs; want 3 each", got)
	}
}

// A draining host lets go of its claims at once: another host may serve
// its queued jobs while busy VMs finish, not after the claim TTL.
func TestFleetDrainReleasesClaims(t *testing.T) {
	url := fleettest.RunNATS(t)
	join := func(id string) *fleet.Fleet {
		f, err := fleet.Join(t.Context(), fleet.Options{URLs: []string{url}, TokenFile: fleettest.TokenFile(t), HostID: id, ClaimTTL: 30 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close(context.Background()) })
		return f
	}
	a, other := join("a"), join("b")
	h := newHarnessDeps(t, 10*time.Millisecond, t.TempDir(), 0, 2, guestRunsOneJob, nil,
		slog.New(slog.DiscardHandler), nil, nil, func(d *Deps) { d.Config.HostID, d.Fleet = "a", a })
	h.forge.mu.Lock()
	h.forge.hold = true // the jobs stay queued
	h.forge.mu.Unlock()
	h.forge.enqueue("j1")
	job := "f|instance\x00j1" // the pool's forge key and the job's id
	eventually(t, 5*time.Second, "a claims j1", func() bool { return a.Held(job) })
	if ok, _ := other.Claim(t.Context(), job); ok {
		t.Fatal("another host took a live host's claim")
	}
	h.drain(t, time.Second)
	eventually(t, 5*time.Second, "another host takes j1 once a drains", func() bool {
		ok, _ := other.Claim(t.Context(), job)
		return ok
	})
}
