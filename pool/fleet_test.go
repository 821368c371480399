package pool

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/config"
	"github.com/nixos-fireactions/nixos-fireactions/fleet"
	"github.com/nixos-fireactions/nixos-fireactions/fleet/fleettest"
	"github.com/nixos-fireactions/nixos-fireactions/forge"
)

// twoHosts are two managers (hosts a and b) serving one pool of one
// forge, each of max VMs, in a fleet at natsURL ("" : no
// fleet). It returns how many VMs both started once jobs jobs ran.
func twoHosts(t *testing.T, natsURL string, jobs, max int) (started [2]int) {
	shared := newFakeForge()
	var hs [2]*harness
	for i, id := range []string{"a", "b"} {
		var cl Claimer
		if natsURL != "" {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			f, err := fleet.Join(ctx, fleet.Options{URLs: []string{natsURL}, HostID: id, ClaimTTL: 5 * time.Second})
			cancel()
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { f.Close(context.Background()) })
			cl = f
		}
		h := newHarnessDeps(t, 10*time.Millisecond, t.TempDir(), 0, max, guestRunsOneJob,
			func(pc *config.Pool) { pc.Timeouts.Idle = 100 * time.Millisecond },
			slog.New(slog.NewTextHandler(io.Discard, nil)), nil,
			func(*fakeForge) forge.Forge { return shared },
			func(d *Deps) { d.Config.HostID, d.Fleet = id, cl })
		h.hv.jobTime = 300 * time.Millisecond
		h.hv.forge, h.forge = shared, shared
		hs[i] = h
	}
	for i := range jobs {
		shared.enqueue(fmt.Sprintf("j%d", i))
	}
	eventually(t, 20*time.Second, "every job done", func() bool {
		shared.mu.Lock()
		defer shared.mu.Unlock()
		return len(shared.finished) == jobs
	})
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
	url := fleettest.RunNATS(t)
	got := twoHosts(t, url, jobs, jobs)
	if got[0]+got[1] != jobs {
		t.Errorf("in a fleet: hosts started %d + %d VMs for %d jobs; want %d in all", got[0], got[1], jobs, jobs)
	}
	alone := twoHosts(t, "", jobs, jobs)
	if alone[0]+alone[1] <= jobs {
		t.Errorf("control without a fleet: hosts started %d + %d VMs for %d jobs; want more than %d (each sees every job)", alone[0], alone[1], jobs, jobs)
	}
	t.Logf("VMs started for %d jobs: fleet %v, no fleet %v", jobs, got, alone)
}

// A host whose pool is full claims nothing more: the other host serves
// the rest, and still one VM per job.
func TestFleetFullHostLeavesJobsToOthers(t *testing.T) {
	const jobs = 6
	got := twoHosts(t, fleettest.RunNATS(t), jobs, 3)
	if got[0]+got[1] != jobs || got[0] == 0 || got[1] == 0 {
		t.Errorf("hosts of 3 VMs each started %d + %d VMs for %d jobs; want %d in all, on both", got[0], got[1], jobs, jobs)
	}
}
