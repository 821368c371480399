package pool

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/config"
	"github.com/nixos-fireactions/nixos-fireactions/forge"
	"github.com/nixos-fireactions/nixos-fireactions/vmstate"
)

// countingClaimer is a fleet in which this host wins every claim it
// asks for (grant) or none (another host holds every job); it counts
// the claims asked for and held.
type countingClaimer struct {
	mu    sync.Mutex
	grant bool
	asked int
	held  map[string]bool
	// unconfirmed are claims Held reports not counted once, while the
	// claimer keeps them (a refresh unconfirmed for 2/3 of the TTL that
	// succeeds later).
	unconfirmed map[string]bool
	loads       map[string][2]int // the last Publish of each place: free, idle
}

func (c *countingClaimer) Claim(_ context.Context, job string) (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.asked++
	if c.grant {
		c.held[job] = true
	}
	return c.grant, nil
}

func (c *countingClaimer) Held(job string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.unconfirmed[job] {
		delete(c.unconfirmed, job)
		return false
	}
	return c.held[job]
}

func (c *countingClaimer) Release(job string) { c.Forget(job) }

func (c *countingClaimer) Forget(job string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.held, job)
}

func (c *countingClaimer) Publish(place string, free, idle int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.loads == nil {
		c.loads = map[string][2]int{}
	}
	c.loads[place] = [2]int{free, idle}
}

func (c *countingClaimer) load(place string) ([2]int, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	l, ok := c.loads[place]
	return l, ok
}

func (*countingClaimer) Elsewhere(string, int) bool { return false }

func (c *countingClaimer) counts() (asked, held int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.asked, len(c.held)
}

func (h *harness) started() int {
	h.hv.mu.Lock()
	defer h.hv.mu.Unlock()
	return h.hv.started
}

// A GitHub scale-set pool (forge.OwnQueue) serves its queued jobs in a
// fleet without claiming them: GitHub already gave them to this host.
// Even when another host holds every claim, its jobs start VMs here.
func TestFleetOwnQueuePoolsDoNotClaim(t *testing.T) {
	cl := &countingClaimer{held: map[string]bool{}}
	h := newHarnessDeps(t, 10*time.Millisecond, t.TempDir(), 0, 3, guestRunsOneJob, nil,
		slog.New(slog.DiscardHandler), nil,
		func(f *fakeForge) forge.Forge { return ownQueueForge{&notifyingForge{fakeForge: f}} },
		func(d *Deps) { d.Fleet = cl })
	h.forge.mu.Lock()
	h.forge.hold = true
	h.forge.mu.Unlock()
	h.forge.enqueue("j1", "j2")
	eventually(t, 5*time.Second, "two VMs for the scale set's two jobs", func() bool { return h.started() == 2 })
	time.Sleep(200 * time.Millisecond)
	if asked, _ := cl.counts(); asked != 0 {
		t.Errorf("a scale-set pool asked the fleet for %d claims; want none", asked)
	}
}

// A pool that cannot start VMs (in back-off after failures, or whose
// demand source is gone) claims nothing and gives up the claims it
// holds, so another host serves its jobs; once it can start VMs again
// (the positive control) it claims and serves them.
func TestFleetBrokenPoolClaimsNothing(t *testing.T) {
	for _, tc := range []struct {
		name         string
		break_, mend func(p *pool)
	}{
		{"back-off", func(p *pool) { p.notBefore = time.Now().Add(time.Hour) }, func(p *pool) { p.notBefore = time.Time{} }},
		{"source gone", func(p *pool) { p.sourceGone = true }, func(p *pool) { p.sourceGone = false }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cl := &countingClaimer{grant: true, held: map[string]bool{}}
			h := newHarnessDeps(t, 10*time.Millisecond, t.TempDir(), 0, 3, guestRunsOneJob, nil,
				slog.New(slog.DiscardHandler), nil, nil, func(d *Deps) { d.Fleet = cl })
			h.forge.mu.Lock()
			h.forge.hold = true
			h.forge.mu.Unlock()
			p := h.m.poolList()[0]
			// It holds one claim from before it broke.
			h.forge.enqueue("j1")
			eventually(t, 5*time.Second, "j1 claimed and served", func() bool { _, held := cl.counts(); return held == 1 && h.started() == 1 })
			// j1's VM boots to ready first: a boot that succeeds ends a
			// back-off, so breaking the pool before it would be undone.
			eventually(t, 5*time.Second, "j1's VM ready", func() bool {
				vms := h.m.Pools()[0].VMs
				return vms[vmstate.Creating]+vms[vmstate.Booting] == 0
			})
			time.Sleep(100 * time.Millisecond)
			h.m.mu.Lock()
			tc.break_(p)
			h.m.mu.Unlock()
			asked0, _ := cl.counts()
			h.forge.enqueue("j2", "j3")
			eventually(t, 5*time.Second, "its claim given up", func() bool { _, held := cl.counts(); return held == 0 })
			time.Sleep(300 * time.Millisecond)
			if asked, held := cl.counts(); asked != asked0 || held != 0 {
				t.Fatalf("a pool that cannot start VMs asked %d more claims and holds %d; want none", asked-asked0, held)
			}
			h.m.mu.Lock()
			tc.mend(p)
			h.m.mu.Unlock()
			eventually(t, 5*time.Second, "claims again once mended", func() bool { _, held := cl.counts(); return held > 0 })
		})
	}
}

// A start that fails puts the pool in back-off, but a job whose VM is
// still booting keeps its claim: given up, another host would boot a
// second VM for it. Claims beyond the booting VMs are given up.
func TestFleetBackOffKeepsClaimsOfBootingVMs(t *testing.T) {
	cl := &countingClaimer{grant: true, held: map[string]bool{}}
	h := newHarnessDeps(t, 10*time.Millisecond, t.TempDir(), 0, 3, guestHangs,
		func(pc *config.Pool) { pc.Timeouts.Boot = time.Minute },
		slog.New(slog.DiscardHandler), nil, nil, func(d *Deps) { d.Fleet = cl })
	h.forge.mu.Lock()
	h.forge.hold = true
	h.forge.mu.Unlock()
	p := h.m.poolList()[0]
	h.forge.enqueue("j1")
	eventually(t, 5*time.Second, "j1 claimed, its VM booting", func() bool {
		_, held := cl.counts()
		return held == 1 && h.started() == 1
	})
	// Another start failed: the pool is in back-off, with one more job
	// claimed than it has VMs booting.
	h.m.mu.Lock()
	p.notBefore = time.Now().Add(time.Hour)
	h.m.mu.Unlock()
	h.forge.enqueue("j2")
	k2 := waitKey{p.key, "j2"}
	eventually(t, 5*time.Second, "j2 seen queued", func() bool {
		h.m.mu.Lock()
		defer h.m.mu.Unlock()
		return h.m.waiting[k2] != nil
	})
	h.m.mu.Lock()
	cl.mu.Lock()
	cl.held[fleetJob(k2)] = true
	cl.mu.Unlock()
	h.m.waiting[k2].claimed = true
	p.claimed++
	h.m.mu.Unlock()
	eventually(t, 5*time.Second, "the claim beyond the booting VM given up", func() bool { _, held := cl.counts(); return held == 1 })
	time.Sleep(300 * time.Millisecond)
	if _, held := cl.counts(); held != 1 {
		t.Fatalf("a pool in back-off with one VM booting holds %d claims; want 1 (its booting VM's job)", held)
	}
	if h.started() != 1 {
		t.Fatalf("%d VMs started in back-off; want the 1 from before", h.started())
	}
}

// A claim the pool stops counting (Held said no: unconfirmed for 2/3 of
// its TTL) is given back to the fleet, not left to it: a claimer whose
// later refresh succeeds would otherwise keep the key for ever, and no
// host would serve the job it names, even once the job left the queue.
func TestFleetClaimNotCountedIsGivenBack(t *testing.T) {
	cl := &countingClaimer{grant: true, held: map[string]bool{}, unconfirmed: map[string]bool{}}
	heldJob(t, 1, cl)
	cl.mu.Lock()
	cl.grant = false // the job is another host's once given back
	for job := range cl.held {
		cl.unconfirmed[job] = true
	}
	cl.mu.Unlock()
	eventually(t, 5*time.Second, "the claim Held no longer counts given back", func() bool { _, held := cl.counts(); return held == 0 })
}

// A host that cannot read its forge (a token of its own expired, a rate
// limit, its DNS) gives up its claims once the reads have failed for
// failedReadsGiveUp intervals, beyond its VMs still booting, and
// publishes no room and no idle VM: hosts that can read it serve those
// jobs meanwhile. It claims again once it reads.
func TestFleetPoolThatCannotReadItsForgeGivesUpItsClaims(t *testing.T) {
	cl := &countingClaimer{grant: true, held: map[string]bool{}}
	h := heldJob(t, 3, cl)
	eventually(t, 5*time.Second, "j1's VM ready", func() bool {
		vms := h.m.Pools()[0].VMs
		return vms[vmstate.Creating]+vms[vmstate.Booting] == 0
	})
	h.forge.mu.Lock()
	h.forge.runnersErr = errors.New("401 Unauthorized")
	h.forge.mu.Unlock()
	eventually(t, 5*time.Second, "its claim given up", func() bool { _, held := cl.counts(); return held == 0 })
	// Its idle VM is no reason for peers to wait for it either.
	place := h.m.poolList()[0].place
	eventually(t, 5*time.Second, "no idle VM published", func() bool { l, _ := cl.load(place); return l == [2]int{0, 0} })
	h.forge.mu.Lock()
	h.forge.runnersErr = nil
	h.forge.mu.Unlock()
	eventually(t, 5*time.Second, "claims again once it reads its forge", func() bool { _, held := cl.counts(); return held == 1 })
}

// A draining host publishes no room and no idle VM for its pools: peers
// would otherwise defer to its last load, placementWait for each job,
// for the whole drain.
func TestFleetDrainWithdrawsTheLoad(t *testing.T) {
	cl := &countingClaimer{grant: true, held: map[string]bool{}}
	h := newHarnessDeps(t, 10*time.Millisecond, t.TempDir(), 1, 3, guestRunsOneJob, nil,
		slog.New(slog.DiscardHandler), nil, nil, func(d *Deps) { d.Fleet = cl })
	place := h.m.poolList()[0].place
	eventually(t, 5*time.Second, "room and an idle VM published", func() bool {
		l, _ := cl.load(place)
		return l[0] > 0 && l[1] > 0
	})
	h.drain(t, time.Second)
	if l, ok := cl.load(place); !ok || l != [2]int{0, 0} {
		t.Fatalf("after the drain the pool's load is %v (published %v), want 0 free and 0 idle", l, ok)
	}
}

// A pool a reload removes publishes no load any more: its last one
// would make peers defer its jobs to this host until a restart.
func TestFleetReloadWithdrawsARemovedPoolsLoad(t *testing.T) {
	cl := &countingClaimer{grant: true, held: map[string]bool{}}
	h := newHarnessDeps(t, 10*time.Millisecond, t.TempDir(), 1, 3, guestRunsOneJob, nil,
		slog.New(slog.DiscardHandler), nil, nil, func(d *Deps) { d.Fleet = cl })
	place := h.m.poolList()[0].place
	eventually(t, 5*time.Second, "room published", func() bool { l, _ := cl.load(place); return l[0] > 0 })
	if _, err := h.m.Reload(context.Background(), nil, nil); err != nil {
		t.Fatal(err)
	}
	if l, _ := cl.load(place); l != [2]int{0, 0} {
		t.Fatalf("a removed pool's load is %v, want 0 free and 0 idle", l)
	}
}

// After a host shortage a pool starts one VM at a time (ramp), so it
// claims one job at a time too: claims beyond what it starts would keep
// hosts with room from those jobs.
func TestFleetRampingPoolClaimsWhatItStarts(t *testing.T) {
	cl := &countingClaimer{grant: true, held: map[string]bool{}}
	h := newHarnessDeps(t, 10*time.Millisecond, t.TempDir(), 0, 3, guestHangs, nil,
		slog.New(slog.DiscardHandler), nil, nil, func(d *Deps) { d.Fleet = cl })
	p := h.m.poolList()[0]
	h.m.mu.Lock()
	p.shortOf, p.ramp = "memory", 1
	h.m.mu.Unlock()
	h.forge.enqueue("j1", "j2", "j3")
	eventually(t, 5*time.Second, "one VM started", func() bool { return h.started() == 1 })
	time.Sleep(300 * time.Millisecond)
	if _, held := cl.counts(); held != 1 || h.started() != 1 {
		t.Fatalf("a pool ramping one VM at a time holds %d claims and started %d VMs; want 1 and 1", held, h.started())
	}
}

// heldJob is a harness of maxVMs VMs whose fleet is cl and whose runners
// take no job (jobs stay queued), with j1 queued and claimed.
func heldJob(t *testing.T, maxVMs int, cl *countingClaimer) *harness {
	t.Helper()
	h := newHarnessDeps(t, 10*time.Millisecond, t.TempDir(), 0, maxVMs, guestRunsOneJob, nil,
		slog.New(slog.DiscardHandler), nil, nil, func(d *Deps) { d.Fleet = cl })
	h.forge.mu.Lock()
	h.forge.hold = true
	h.forge.mu.Unlock()
	h.forge.enqueue("j1")
	eventually(t, 5*time.Second, "j1 claimed", func() bool { _, held := cl.counts(); return held == 1 })
	return h
}
