package pool

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/config"
)

// Claimer shares demand with the other hosts of a fleet (package fleet):
// a queued job counts as this host's demand only while this host holds
// the job's claim, so one job boots one VM in the whole fleet. Deps.Fleet
// nil: every queued job counts, as on a single host.
type Claimer interface {
	// Claim takes job for this host unless another host holds it, and
	// reports whether this host holds it; a host cut off from the fleet
	// claims nothing (an error).
	Claim(ctx context.Context, job string) (bool, error)
	// Held reports whether this host still counts its claim on job
	// (it can lapse or be lost while the host is cut off). No I/O.
	Held(job string) bool
	// Release gives up this host's claim on a job still queued, for
	// another host to take. It does not block.
	Release(job string)
	// Forget drops this host's claim on a job that left the queue; its
	// key lapses in the fleet, so a host with an older read of the
	// queue does not claim the job again. No I/O.
	Forget(job string)
	// Publish tells the other hosts pool's load here (pool: its
	// placeKey): free, the jobs it would claim now; idle, its VMs not
	// yet busy that no claim covers. It does not block.
	Publish(pool string, free, idle int)
	// Elsewhere reports whether another live host is better placed for
	// pool's next job than this one, which has free room and no idle VM
	// for it: one with idle VMs for the pool, or more free room. No I/O.
	Elsewhere(pool string, free int) bool
}

// placementWait bounds how long a host leaves a job it could claim to
// a better placed host (Claimer.Elsewhere), counted from when it first
// saw the job queued: then it claims anyway, so no job waits for a host
// that does not take it.
const placementWait = 3 * time.Second

// claimRound bounds the claims one pool makes in one look.
const claimRound = 2 * time.Second

// placeKey is what pool pc's load goes by in a fleet: its name and a
// hash of its forge, scope and sorted labels. A peer's pool of the same
// name that serves other jobs (another forge, scope or labels) is
// another key, so its idle VMs or room do not hold this pool's jobs
// back; the name keeps the hosts' status readable.
func placeKey(pc config.Pool) string {
	labels := slices.Sorted(slices.Values(pc.Labels))
	h := sha256.Sum256([]byte(pc.Forge + "\x00" + pc.Scope + "\x00" + strings.Join(labels, "\x00")))
	return pc.Name + "/" + hex.EncodeToString(h[:6])
}

// fleetJob is how the fleet names job k: forge key and job id, the same
// on every host whose pools name their forges alike.
func fleetJob(k waitKey) string { return k.forge + "\x00" + k.id }

// demandLocked is the number of p's queued jobs that are this host's to
// serve: all of them, or in a fleet those it holds claims on. A pool
// whose queue is its own (forge.OwnQueue, a GitHub scale set) claims
// nothing: its forge already gave its jobs to this host alone. Callers
// hold m.mu.
func (m *Manager) demandLocked(p *pool) int {
	if m.d.Fleet == nil || p.own {
		return p.queued
	}
	return p.claimed
}

// dropClaimLocked drops the claim, if held, on queued job k of q: a job
// that left the queue is forgotten (its key lapses in the fleet, so a
// host with an older read of the queue does not claim it again); one
// still queued is released for another host or pool to take. Callers
// hold m.mu.
func (m *Manager) dropClaimLocked(k waitKey, q *queuedJob, stillQueued bool) {
	if !q.claimed {
		return
	}
	q.claimed = false
	q.pool.claimed--
	if stillQueued {
		m.d.Fleet.Release(fleetJob(k))
	} else {
		m.d.Fleet.Forget(fleetJob(k))
	}
}

// releaseClaimsLocked drops every claim this host holds: it drains, and
// other hosts are to serve its queued jobs now, not after the drain.
// Callers hold m.mu.
func (m *Manager) releaseClaimsLocked() {
	if m.d.Fleet == nil {
		return
	}
	for k, q := range m.waiting {
		m.dropClaimLocked(k, q, true)
	}
}

// withdrawLoadsLocked publishes no room and no idle VM for the places
// of ps that no pool of keep serves (a draining host's pools, the pools a
// reload removed): peers would otherwise defer those jobs to this host,
// placementWait each, as long as it runs. Callers hold m.mu.
func (m *Manager) withdrawLoadsLocked(ps, keep []*pool) {
	if m.d.Fleet == nil {
		return
	}
	for _, p := range ps {
		if !slices.ContainsFunc(keep, func(k *pool) bool { return k.place == p.place }) {
			m.d.Fleet.Publish(p.place, 0, 0)
		}
	}
}

// failedReadsGiveUp is how many reconcile intervals a pool's forge
// reads fail before it gives up its claims: one failure may be a blip
// (passes can run back to back), and a claim given up lets another host
// take the job.
const failedReadsGiveUp = 2

// readsFailing reports whether p has not read its forge for
// failedReadsGiveUp intervals: its jobs may not be queued any more, and
// its VMs may not register. Callers hold m.mu, or run on the Run
// goroutine (the only writer).
func (m *Manager) readsFailing(p *pool) bool {
	return !p.readFailing.IsZero() && time.Since(p.readFailing) >= failedReadsGiveUp*m.d.Interval
}

// claimFor brings p's claims level with what it can serve: claims that
// lapsed or were lost stop counting, and its unclaimed queued jobs,
// oldest first, are claimed while p has room for them (max less busy VMs
// less claims held): a full pool claims nothing, so another host serves
// the job. A pool with no idle VM of its own for a job leaves it, for
// placementWait at most, while another host is better placed
// (Claimer.Elsewhere); it publishes its own room and idle VMs
// (Claimer.Publish) each time. A pool that cannot start VMs now (in
// back-off after failures, its demand source gone, or its forge unread
// for failedReadsGiveUp intervals) claims nothing and gives up the claims it
// holds beyond its VMs still booting (those take their jobs), for a
// working host to serve them; a paused or draining one
// claims nothing. An own-queue pool (see demandLocked) never claims.
// Runs on the Run goroutine, outside m.mu for the claims' I/O.
func (m *Manager) claimFor(ctx context.Context, p *pool) {
	if m.d.Fleet == nil || p.own {
		return
	}
	type cand struct {
		k     waitKey
		since time.Time
		seen  time.Time
	}
	var free []cand
	m.mu.Lock()
	blind := m.readsFailing(p)
	broken := p.sourceGone || time.Now().Before(p.notBefore) || blind
	// A broken pool keeps as many claims as it has VMs still booting:
	// they will take those jobs, and a claim given up would let another
	// host boot a second VM for one. (VMs are not tied to jobs: any of
	// the pool's runners takes any of its jobs, so which claims stay
	// does not matter.)
	_, booting := p.counted()
	for k, q := range m.waiting {
		if q.pool != p {
			continue
		}
		if broken && (!q.claimed || booting == 0) {
			m.dropClaimLocked(k, q, true)
			continue
		}
		if broken {
			booting--
		}
		if q.claimed {
			if !m.d.Fleet.Held(fleetJob(k)) {
				// No longer counted here: given back, so that a later
				// refresh does not keep for ever a claim no VM serves.
				m.d.Fleet.Release(fleetJob(k))
				q.claimed = false
				p.claimed--
			}
			continue
		}
		free = append(free, cand{k, q.since, q.seen})
	}
	c, starting := p.counted()
	room := p.max - c.busy - p.claimed
	if p.ramp > 0 {
		// After a host shortage the pool starts ramp VMs at a time
		// (startMissing): it claims no more jobs than it can start VMs
		// for now, less the claims no VM of its covers yet.
		room = min(room, p.ramp-starting-max(0, p.claimed-c.unbusy))
	}
	// spare: VMs not yet busy that no claim covers (min_idle's among
	// them): each takes a job the forge hands it, with no new VM.
	spare := c.unbusy - p.claimed
	if p.paused || m.draining || broken {
		room = 0
	}
	if p.paused || m.draining || blind {
		// Idle VMs of a pool that cannot read its forge are no reason
		// for peers to wait.
		spare = 0
	}
	m.mu.Unlock()
	defer func() {
		// Not for a pool a drain or a reload withdrew meanwhile
		// (withdrawLoadsLocked): its load stays withdrawn.
		m.mu.Lock()
		defer m.mu.Unlock()
		if !m.draining && slices.Contains(m.pools, p) {
			m.d.Fleet.Publish(p.place, room, spare)
		}
	}()
	if room <= 0 || len(free) == 0 {
		return
	}
	slices.SortFunc(free, func(a, b cand) int { return a.since.Compare(b.since) })
	cctx, cancel := context.WithTimeout(ctx, claimRound)
	defer cancel()
	now := time.Now()
	for _, f := range free {
		if room <= 0 {
			return
		}
		// With no idle VM of its own for the job, a host leaves it for a
		// while to a host better placed (idle VMs, more room).
		if spare <= 0 && now.Sub(f.seen) < placementWait && m.d.Fleet.Elsewhere(p.place, room) {
			continue
		}
		won, err := m.d.Fleet.Claim(cctx, fleetJob(f.k))
		if err != nil {
			if !errors.Is(err, context.DeadlineExceeded) {
				p.log.Debug("claim nothing now", "job", f.k.id, "err", err)
			}
			return
		}
		if !won {
			continue
		}
		m.mu.Lock()
		switch q := m.waiting[f.k]; {
		case q == nil:
			m.d.Fleet.Forget(fleetJob(f.k)) // it left the queue meanwhile
		case q.pool == p && !q.claimed:
			q.claimed = true
			p.claimed++
			room--
			spare--
		default:
			m.d.Fleet.Release(fleetJob(f.k)) // a reload gave it another pool meanwhile
		}
		m.mu.Unlock()
	}
}
