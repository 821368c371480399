package pool

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/config"
	"github.com/nixos-fireactions/nixos-fireactions/fleet"
	"github.com/nixos-fireactions/nixos-fireactions/fleet/fleettest"
	"github.com/nixos-fireactions/nixos-fireactions/forge"
)

// joinFleet joins host id to the fleet at url (claim TTL 5 s).
func joinFleet(t *testing.T, url, id string) *fleet.Fleet {
	t.Helper()
	f, err := fleet.Join(t.Context(), fleet.Options{URLs: []string{url}, TokenFile: fleettest.TokenFile(t), HostID: id, ClaimTTL: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close(context.Background()) })
	return f
}

// fleetHost is a manager (host id) of pool p with minIdle and max VMs on
// forge shared, in fleet f, looking at its queue every interval.
func fleetHost(t *testing.T, f *fleet.Fleet, id string, shared *fakeForge, interval time.Duration, minIdle, max int) *harness {
	return fleetHostTuned(t, f, id, shared, interval, minIdle, max, nil)
}

// fleetHostTuned is fleetHost with its pool's configuration tuned.
func fleetHostTuned(t *testing.T, f *fleet.Fleet, id string, shared *fakeForge, interval time.Duration, minIdle, max int, tune func(*config.Pool)) *harness {
	h := newHarnessDeps(t, interval, t.TempDir(), minIdle, max, guestRunsOneJob, tune,
		slog.New(slog.DiscardHandler), nil,
		func(*fakeForge) forge.Forge { return shared },
		func(d *Deps) {
			d.Config.HostID, d.Fleet = id, f
			// The fake VMM takes its jobs from the shared forge; set
			// before the manager runs, which reads it.
			d.Hypervisor.(*fakeHV).forge = shared
		})
	h.forge = shared
	return h
}

// pKey is what the harness's pool p goes by in a fleet (placeKey);
// pKeyOf, with other labels.
var pKey = pKeyOf("linux")

func pKeyOf(labels ...string) string {
	return placeKey(config.Pool{Name: "p", Forge: "f", Scope: config.PoolDefaults().Scope, Labels: labels})
}

// Ties go to the host with the most free room: host a (room 4) and host
// b (room 1) see one job; b looks at the queue thirty times as often,
// so without placement it claims first, yet a serves the job.
func TestFleetJobGoesToTheHostWithMostRoom(t *testing.T) {
	url := fleettest.RunNATS(t)
	shared := newFakeForge()
	shared.hold = true
	fa, fb := joinFleet(t, url, "a"), joinFleet(t, url, "b")
	a := fleetHost(t, fa, "a", shared, 300*time.Millisecond, 0, 4)
	b := fleetHost(t, fb, "b", shared, 10*time.Millisecond, 0, 1)
	eventually(t, 5*time.Second, "b reads a's room", func() bool { return fb.Elsewhere(pKey, 1) })
	if fa.Elsewhere(pKey, 4) {
		t.Fatal("a defers to b, whose room is less")
	}
	shared.enqueue("j1")
	eventually(t, 2*time.Second, "a VM for j1", func() bool { return a.started()+b.started() > 0 })
	time.Sleep(500 * time.Millisecond)
	if got := [2]int{a.started(), b.started()}; got != [2]int{1, 0} {
		t.Errorf("hosts a (room 4) and b (room 1) started %v VMs for one job; want [1 0]", got)
	}
}

// A job an idle runner anywhere in the fleet will take starts no VM on
// another host: host a has an idle VM (min_idle 1), host b none and
// looks at the queue thirty times as often; b starts nothing for the
// job, a claims it (its idle VM takes it; a starts one VM to keep its
// min_idle).
func TestFleetIdleRunnerElsewhereStartsNoVM(t *testing.T) {
	url := fleettest.RunNATS(t)
	shared := newFakeForge()
	shared.hold = true
	fa, fb := joinFleet(t, url, "a"), joinFleet(t, url, "b")
	a := fleetHost(t, fa, "a", shared, 300*time.Millisecond, 1, 4)
	b := fleetHost(t, fb, "b", shared, 10*time.Millisecond, 0, 4)
	eventually(t, 5*time.Second, "a's idle VM, published", func() bool { return a.started() == 1 && fb.Elsewhere(pKey, 4) })
	shared.enqueue("j1")
	eventually(t, 2*time.Second, "a claims j1", func() bool { return fa.Held("f|instance\x00j1") })
	time.Sleep(500 * time.Millisecond)
	if b.started() != 0 {
		t.Errorf("host b started %d VMs for a job host a's idle VM takes; want 0", b.started())
	}
	if a.started() > 2 {
		t.Errorf("host a started %d VMs; want its min_idle VM and one to keep min_idle", a.started())
	}
}

// Leaving a job to a better placed host is bounded: a host that
// publishes more room but never claims (no manager behind it) delays the
// job by placementWait at most, then b claims it anyway.
func TestFleetDeferringIsBounded(t *testing.T) {
	url := fleettest.RunNATS(t)
	shared := newFakeForge()
	shared.hold = true
	other, fb := joinFleet(t, url, "a"), joinFleet(t, url, "b")
	other.Publish(pKey, 10, 0)
	eventually(t, 5*time.Second, "b reads a's room", func() bool { return fb.Elsewhere(pKey, 2) })
	b := fleetHost(t, fb, "b", shared, 10*time.Millisecond, 0, 2)
	start := time.Now()
	shared.enqueue("j1")
	eventually(t, placementWait+3*time.Second, "b serves j1 anyway", func() bool { return b.started() == 1 })
	if d := time.Since(start); d < placementWait/2 {
		t.Errorf("b served the job after %s: it did not leave it to the better placed host", d)
	} else {
		t.Logf("b served the job after %s (bound %s)", d.Round(time.Millisecond), placementWait)
	}
}

// A peer's pool of the same name that serves other jobs holds no job
// back: host a's pool p offers other labels and has an idle VM; host
// b's pool p serves the job at once, not after placementWait.
func TestFleetSameNamedPoolOfOtherLabelsDefersNothing(t *testing.T) {
	url := fleettest.RunNATS(t)
	shared := newFakeForge()
	shared.hold = true
	fa, fb := joinFleet(t, url, "a"), joinFleet(t, url, "b")
	gpu := func(pc *config.Pool) { pc.Labels = []string{"gpu"} }
	a := fleetHostTuned(t, fa, "a", shared, 300*time.Millisecond, 1, 4, gpu)
	eventually(t, 5*time.Second, "a's idle VM, published", func() bool { return a.started() == 1 && fb.Elsewhere(pKeyOf("gpu"), 4) })
	b := fleetHost(t, fb, "b", shared, 10*time.Millisecond, 0, 4)
	start := time.Now()
	shared.enqueue("j1")
	eventually(t, placementWait+3*time.Second, "b serves j1", func() bool { return b.started() == 1 })
	if d := time.Since(start); d >= placementWait/2 {
		t.Errorf("b served the job after %s: a's pool of another label set held it back", d)
	}
}
