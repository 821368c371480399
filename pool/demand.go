package pool

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/forge"
)

// assign gives each queued job to the first pool, in configuration order,
// that uses the job's forge and offers all of the job's labels; a job with
// no labels goes to the first pool that takes untagged jobs (GitLab's
// run_untagged). It returns the jobs per pool and the jobs no pool can
// serve.
func assign(pools []poolView, jobs map[string][]forge.Job) (perPool map[string][]forge.Job, unserved []forge.Job) {
	perPool = map[string][]forge.Job{}
	for forgeName, js := range jobs {
	job:
		for _, j := range js {
			for _, p := range pools {
				if p.serves(forgeName, j) {
					perPool[p.name] = append(perPool[p.name], j)
					continue job
				}
			}
			unserved = append(unserved, j)
		}
	}
	return perPool, unserved
}

// poolView is what assignment needs to know of a pool.
type poolView struct {
	name, forge string
	labels      []string
	untagged    bool // also takes jobs without labels
	own         bool // every job of its forge key is its own, whatever its labels
}

// view is what assignment needs to know of p.
func (p *pool) view() poolView {
	return poolView{name: p.cfg.Name, forge: p.key, labels: p.cfg.Labels, untagged: p.cfg.Runner.RunUntagged, own: p.own}
}

// counts are a pool's VMs by what they can do.
type counts struct {
	busy   int // running a job
	unbusy int // creating, booting or idle: capacity for queued jobs
}

// toStart is how many VMs a pool should start now: enough that the VMs not
// yet busy cover min_idle plus the queued jobs, never more than max in all.
func toStart(c counts, minIdle, max, queued int) int {
	want := minIdle + queued - c.unbusy
	room := max - c.busy - c.unbusy
	return clamp(min(want, room))
}

// surplus is how many idle VMs a pool holds beyond min_idle plus the
// queued jobs; only idle VMs are ever removed for it.
func surplus(c counts, minIdle, queued int) int {
	return clamp(c.unbusy - (minIdle + queued))
}

func clamp(n int) int {
	if n < 0 {
		return 0
	}
	return n
}

// serves reports whether pool p takes job j of forge key fk.
func (p poolView) serves(fk string, j forge.Job) bool {
	return p.forge == fk && (p.own || forge.MatchLabels(j.Labels, p.labels) || len(j.Labels) == 0 && p.untagged)
}

// demandEvent is a queue change a driver told (change, for the pools of
// forge key), or a pool to look at again (pool: one of its VMs is gone).
type demandEvent struct {
	key    string
	change forge.QueueChange
	pool   *pool
	// minIdleOnly: the pool's queued count may still hold the job of the
	// VM this event is about (it turned busy, or ended, since the queue
	// was last read); only min_idle is looked at for it.
	minIdleOnly bool
	// busyAt: when a VM of the pool turned busy (pool.untold).
	busyAt time.Time
}

// untoldFor bounds how long a VM's taking a job is counted against a
// told forge's queue while the forge has not told the job gone: its tell
// or read comes late, or never (a job its reads saw and no tell did).
const untoldFor = 30 * time.Second

// turnedBusy counts a VM of a told pool that took a job at t against
// the queue, unless the forge told a job gone first (toldAhead). Callers
// hold Manager.mu.
func (p *pool) turnedBusy(t time.Time) {
	p.pruneUntold(t)
	p.toldAhead, p.untold = matchOrKeep(p.toldAhead, p.untold, t)
}

// leftTold matches a job the forge told gone with the oldest VM that
// took one, or keeps it for the next (a tell may overtake the VM's own
// report). Callers hold Manager.mu.
func (p *pool) leftTold(t time.Time) {
	p.pruneUntold(t)
	p.untold, p.toldAhead = matchOrKeep(p.untold, p.toldAhead, t)
}

// matchOrKeep takes the oldest of other for t, or adds t to own.
func matchOrKeep(other, own []time.Time, t time.Time) ([]time.Time, []time.Time) {
	if len(other) > 0 {
		return other[1:], own
	}
	return other, append(own, t)
}

// pruneUntold drops the times older than untoldFor. Callers hold
// Manager.mu.
func (p *pool) pruneUntold(now time.Time) {
	p.untold = dropOlder(p.untold, now)
	p.toldAhead = dropOlder(p.toldAhead, now)
}

func dropOlder(ts []time.Time, now time.Time) []time.Time {
	i := 0
	for i < len(ts) && now.Sub(ts[i]) > untoldFor {
		i++
	}
	return ts[i:]
}

// demandInbox holds the events told since the Run goroutine last took
// them, in order; tell never blocks and wakes it once however many
// arrive meanwhile.
type demandInbox struct {
	mu      sync.Mutex
	pending []demandEvent
	spare   []demandEvent // the previous batch's array, reused
	wake    chan struct{}
}

func newDemandInbox() *demandInbox {
	return &demandInbox{wake: make(chan struct{}, 1)}
}

func (in *demandInbox) tell(e demandEvent) {
	in.mu.Lock()
	in.pending = append(in.pending, e)
	in.mu.Unlock()
	select {
	case in.wake <- struct{}{}:
	default:
	}
}

// take returns the pending events; the slice is valid until the next
// take.
func (in *demandInbox) take() []demandEvent {
	in.mu.Lock()
	defer in.mu.Unlock()
	out := in.pending
	in.pending, in.spare = in.spare[:0], out
	return out
}

// listenLocked has every pool's driver that tells its queue changes tell
// them to the manager, by the pool's forge key, and the drivers of pools
// gone stop. Callers hold m.mu.
func (m *Manager) listenLocked() {
	now := map[forge.QueueNotifier]bool{}
	for _, p := range m.pools {
		n, ok := forge.NotifierOf(p.forge)
		p.told = ok
		if !ok || now[n] {
			continue
		}
		now[n] = true
		key := p.key
		n.NotifyQueue(func(c forge.QueueChange) { m.demand.tell(demandEvent{key: key, change: c}) })
	}
	for n := range m.notifiers {
		if !now[n] {
			n.NotifyQueue(nil)
		}
	}
	m.notifiers = now
}

// applyDemand applies the events told so far to the queued jobs and
// returns the pools whose demand grew or that lost a VM, each once, with
// whether their queued jobs are to be looked at (not when every event for
// the pool was minIdleOnly). O(pools) per event; it runs on the Run
// goroutine only.
func (m *Manager) applyDemand(now time.Time) []touchedPool {
	evs := m.demand.take()
	if len(evs) == 0 {
		return nil
	}
	var touched []touchedPool
	touch := func(p *pool, queue bool) {
		if p == nil {
			return
		}
		for i := range touched {
			if touched[i].p == p {
				touched[i].queue = touched[i].queue || queue
				return
			}
		}
		touched = append(touched, touchedPool{p, queue})
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, e := range evs {
		if e.pool != nil {
			if !e.busyAt.IsZero() && e.pool.told {
				e.pool.turnedBusy(e.busyAt)
			}
			touch(e.pool, !e.minIdleOnly)
			continue
		}
		k := waitKey{e.key, e.change.Job.ID}
		q := m.waiting[k]
		if !e.change.Queued {
			if q != nil {
				m.obs.QueueWait(q.pool.cfg.Name, now.Sub(q.since))
				m.dropClaimLocked(k, q, false)
				q.pool.queued--
				q.pool.leftTold(now)
				delete(m.waiting, k)
			}
			continue
		}
		if q != nil {
			continue // known: a repeat
		}
		p := m.assignLocked(e.key, e.change.Job)
		if p == nil {
			m.logUnservedLocked(e.change.Job)
			continue
		}
		m.waiting[k] = &queuedJob{pool: p, since: queuedSince(e.change.Job, now), seen: now, pass: m.pass}
		p.queued++
		touch(p, true)
	}
	return touched
}

// touchedPool is a pool an event concerns; queue: its queued jobs count.
type touchedPool struct {
	p     *pool
	queue bool
}

// assignLocked is the pool that takes job j of forge key fk (as assign
// decides), or nil. Callers hold m.mu.
func (m *Manager) assignLocked(fk string, j forge.Job) *pool {
	for _, p := range m.pools {
		if p.view().serves(fk, j) {
			return p
		}
	}
	return nil
}

// react applies the events told since the last look and starts what the
// pools they concern lack, from the counts kept as VMs move: no pass
// over every VM or job. The periodic full pass stays the safety net.
func (m *Manager) react(ctx context.Context) {
	touched := m.applyDemand(time.Now())
	m.mu.Lock()
	draining, current := m.draining, m.pools
	m.mu.Unlock()
	if draining {
		return
	}
	for _, t := range touched {
		if !slices.Contains(current, t.p) {
			continue // retired by a reload
		}
		if t.queue {
			m.claimFor(ctx, t.p)
		}
		c, starting := t.p.counted()
		m.startMissing(ctx, t.p, c, starting, !t.queue)
	}
}
