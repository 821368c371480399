// Package pool runs the orchestrator's pools: a reconcile loop that turns
// forge demand into VMs, one goroutine per VM that walks it through
// Creating → Booting → Idle → Busy → Done/Failed with its state on disk
// (then Deregistering while a failed runner removal is retried), crash
// recovery that adopts every VM whose monitor still runs, and a drain
// that stops everything without leaving a VM, TAP, address, file or forge
// runner behind.
package pool

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
	"github.com/nixos-fireactions/nixos-fireactions/config"
	"github.com/nixos-fireactions/nixos-fireactions/forge"
	"github.com/nixos-fireactions/nixos-fireactions/netplan"
	"github.com/nixos-fireactions/nixos-fireactions/vmm"
	"github.com/nixos-fireactions/nixos-fireactions/vmstate"
	"github.com/nixos-fireactions/nixos-fireactions/warmstart"
)

// Network is the host network the manager needs per VM.
type Network interface {
	AddTAP(name string) error
	DeleteTAP(name string) error
	// Admit lets the VM on tap send from its own MAC and address (and
	// nothing else); Expel forgets it.
	Admit(tap, mac string, ip netip.Addr) error
	Expel(tap, mac string, ip netip.Addr) error
}

// BootFiles writes a VM's initramfs: the pool's boot archive plus the VM's
// own agent configuration.
type BootFiles interface {
	WriteVM(pool, dst string, cfg agentproto.Config) error
}

// Deps are the manager's collaborators; tests pass fakes.
type Deps struct {
	Config     *config.Config
	Forges     map[string]forge.Forge // by pool name: each pool's forge scope
	Hypervisor vmm.Hypervisor
	Network    Network
	Alloc      *netplan.Allocator
	Store      *vmstate.Store
	Boot       BootFiles
	Log        *slog.Logger
	// ReportURL is where guest agents report (the agent listener).
	ReportURL string
	// ConsoleDir keeps the serial console logs of failed VMs.
	ConsoleDir string
	// Interval is the reconcile period.
	Interval time.Duration
	// Observer is told of events for metrics; nil: none.
	Observer Observer
	// Roots makes the disks of VMs whose pool boots an OCI image; nil:
	// every pool boots its initramfs.
	Roots Roots
	// Fleet shares demand with other hosts (Claimer); nil: none.
	Fleet Claimer
	// TemplateDir holds the warm-start pools' templates, one directory
	// each (see template.go); required when a pool has warm_start.
	TemplateDir string
	// Agent is the guest agent binary's path; required when a pool has
	// warm_start. Its warmstart.FileDigest, taken at each template build
	// (a reload may turn warm_start on), is part of the template's key.
	Agent string
	// WarmStarts counts warm-start pools' cold boots by reason (and
	// template builds, when it is a TemplateCounter); nil: not counted.
	WarmStarts warmstart.Counter
}

// Manager owns the pools.
type Manager struct {
	d     Deps
	log   *slog.Logger
	owner forge.Owner // names this host's runners and knows them
	pools []*pool
	kick  chan struct{}

	mu           sync.Mutex
	vms          map[string]*vm // by id, all pools
	draining     bool
	reconciled   bool // a full reconcile has run
	wg           sync.WaitGroup
	unserved     map[string]bool                         // job ids already logged as unservable
	waiting      map[waitKey]*queuedJob                  // jobs seen queued, by forge key and id; the Run goroutine's
	runnerStates map[string]map[string]forge.RunnerState // the last full pass's, by forge key and runner name; the Run goroutine's
	// passVMs, passIdle: the Run goroutine's lists of VMs, kept from
	// pass to pass so that a pass allocates none.
	passVMs, passIdle []*vm
	pass              uint64                       // full reconcile passes, to mark the jobs a pass saw
	demand            *demandInbox                 // queue changes and freed VMs told since the Run goroutine last looked
	notifiers         map[forge.QueueNotifier]bool // drivers told where to send their queue changes; guarded by mu
	obs               Observer
	removals          map[string]*removal // runner removals still to be confirmed, by vm id
	// sweepOwed names the forge keys whose runners Recover could not
	// list: the first pass that lists them queues the removal of those
	// no VM holds (sweepLeftovers). Set before Run; the Run goroutine's.
	sweepOwed map[string]bool
	warm      map[string]*warmPool // warm-start pools' templates, by pool name; guarded by mu
	// removedTemplates names the pools whose template directories New
	// removed (pools gone or turned cold while the daemon was down):
	// Recover still ends the template monitors a crash left for them.
	removedTemplates []string
	retrying         bool // a pass over removals runs
	// removing is held by a pass over removals and by a drain's last
	// try: one runner is never removed twice at once.
	removing sync.Mutex
	// recovered: Recover has returned. Until then a report for a VM not
	// known yet may be one Recover is about to adopt: it is refused as
	// retryable (ErrNotRecovered), not for good.
	recovered bool
}

// queuedJob is a job seen waiting: the pool it counts for (pool.queued)
// and, for the queue-wait metric, since when.
type queuedJob struct {
	pool  *pool
	since time.Time
	seen  time.Time // when this host first saw it queued
	pass  uint64    // the last full pass that saw it queued
	// claimed: this host holds its claim in the fleet (Deps.Fleet).
	claimed bool
}

// waitKey names a queued job: its forge and scope (pool.key) and its id.
type waitKey struct{ forge, id string }

// pool is one configured pool's live state.
type pool struct {
	cfg   config.Pool
	forge forge.Forge
	key   string     // forge and scope: pools with one key share demand (poolKey)
	place string     // what its load goes by in a fleet (placeKey)
	own   bool       // its queue is its own (forge.OwnQueue): key names the pool too
	capMu sync.Mutex // held while its capacity is told (tellCapacity)
	log   *slog.Logger

	// Run-time settings, guarded by Manager.mu: they start from the
	// configuration and change through Scale and SetPaused.
	minIdle, max int
	paused       bool
	// sourceGone: its demand source at the forge was deleted
	// (forge.ErrDemandSourceDeleted); it starts no VM until a reload.
	sourceGone bool
	// gen counts the reloads that handed the pool's scope out again
	// (each clears sourceGone): a Register refused before one must not
	// set sourceGone after it.
	gen     uint64
	queued  int // queued jobs assigned to it (Manager.waiting)
	claimed int // of those, the ones this host holds claims on (Deps.Fleet)
	// took counts the pool's VMs that ever turned busy; tookAtRead is
	// took when the last full pass began reading the forge's queue. A job
	// a VM took since then may still be counted in queued: for a forge
	// that does not tell its queue changes, queued less (took -
	// tookAtRead) is what still waits.
	took       atomic.Int64
	tookAtRead int64
	// told: the pool's driver tells its queue changes (forge.QueueNotifier).
	// Its tells and its reads may lag the runners (Gitea delivers
	// in_progress after the job's VM may be gone; a scale set's
	// statistics follow a runner's start): untold holds when each of the
	// pool's VMs turned busy whose job the forge has not told gone yet,
	// oldest first, kept for untoldFor at most; queued less those is what
	// still waits. toldAhead: jobs told gone before a VM's report.
	told      bool
	untold    []time.Time
	toldAhead []time.Time

	// readFailing is since when the passes could not read the pool's
	// forge (its queue or its runners), zero while they can; guarded by
	// Manager.mu.
	readFailing time.Time

	// failures since the last VM that became ready; drives backoff.
	failures  int
	notBefore time.Time
	// shortOf is the host resource the last VM lacked ("" when none):
	// the pool starts one VM at a time until one becomes ready.
	shortOf string
	// ramp, after a shortage, is how many VMs may be starting at once
	// (0: no limit). A shortage sets it to 1, each VM that becomes ready
	// raises it by one, up to the pool's max, where the limit ends: the
	// host's room is found again step by step, not by a burst of VMs that
	// all fail (each one a runner registered and removed at the forge).
	ramp int

	// VMs by phase, kept as they move (vm.update, pool.moved): what a
	// queue change needs to decide without a pass over every VM.
	nStarting, nIdle, nBusy atomic.Int64

	// listed is closed after the first full pass (since Recover) that
	// read the pool's runners at its forge: what the forge knew of the
	// VMs adopted while booting has been delivered to them
	// (reconcilePool). Set before Run starts; closed by the pass alone.
	listed chan struct{}
}

// moved counts a VM of p moving from one phase to another ("" when it
// joins or leaves the manager).
func (p *pool) moved(from, to vmstate.Phase) {
	if from == to {
		return
	}
	if c := p.phaseCount(from); c != nil {
		c.Add(-1)
	}
	if c := p.phaseCount(to); c != nil {
		c.Add(1)
	}
}

func (p *pool) phaseCount(ph vmstate.Phase) *atomic.Int64 {
	switch ph {
	case vmstate.Creating, vmstate.Booting:
		return &p.nStarting
	case vmstate.Idle:
		return &p.nIdle
	case vmstate.Busy:
		return &p.nBusy
	}
	return nil
}

// counted is p's VMs by what they can do, from the counts kept as they
// move: O(1).
func (p *pool) counted() (c counts, starting int) {
	st := int(p.nStarting.Load())
	return counts{busy: int(p.nBusy.Load()), unbusy: st + int(p.nIdle.Load())}, st
}

// newPool is the pool of configuration pc on driver f. Pools of one
// forge and scope share its queue (one key), unless f says its queue is
// its pool's alone (forge.OwnQueue): then the key names the pool too, so
// its queue is read, and what its driver tells applied, for it only.
func newPool(pc config.Pool, f forge.Forge, log *slog.Logger) *pool {
	p := &pool{
		cfg: pc, forge: f, key: pc.Forge + "|" + pc.Scope, place: placeKey(pc), log: log.With("pool", pc.Name),
		minIdle: pc.MinIdle, max: pc.Max, listed: make(chan struct{}),
	}
	if forge.HasOwnQueue(f) {
		p.own, p.key = true, p.key+"|"+pc.Name
	}
	return p
}

// New builds a manager for the pools in d.Config.
func New(d Deps) (*Manager, error) {
	if d.Interval <= 0 {
		d.Interval = 2 * time.Second
	}
	if d.Observer == nil {
		d.Observer = nopObserver{}
	}
	owner, err := forge.NewOwner(d.Config.HostID)
	if err != nil {
		return nil, err
	}
	m := &Manager{
		d: d, log: d.Log, owner: owner, kick: make(chan struct{}, 1), vms: map[string]*vm{},
		unserved: map[string]bool{}, waiting: map[waitKey]*queuedJob{}, obs: d.Observer,
		removals: map[string]*removal{}, demand: newDemandInbox(), warm: map[string]*warmPool{}, sweepOwed: map[string]bool{},
		notifiers: map[forge.QueueNotifier]bool{}, runnerStates: map[string]map[string]forge.RunnerState{},
	}
	for _, pc := range d.Config.Pools {
		f, ok := d.Forges[pc.Name]
		if !ok {
			return nil, fmt.Errorf("pool %q: forge %q not connected", pc.Name, pc.Forge)
		}
		if pc.WarmStart && d.TemplateDir == "" {
			return nil, fmt.Errorf("pool %q: warm_start without a template directory", pc.Name)
		}
		m.pools = append(m.pools, newPool(pc, f, d.Log))
	}
	m.removedTemplates = m.removeStaleTemplates(d.Config.Pools)
	m.mu.Lock()
	for _, p := range m.pools {
		// Pause and Scale live in this process only: a start tells each
		// forge that takes it the pool's capacity as it is now, not what
		// a previous run told last (0 if it was paused).
		m.tellCapacity(p)
	}
	m.listenLocked()
	m.mu.Unlock()
	return m, nil
}

// Owner names this host's runners and tells them from other hosts'.
func (m *Manager) Owner() forge.Owner { return m.owner }

// Kick asks for a reconcile now (webhooks call it).
func (m *Manager) Kick() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// Run reconciles until ctx ends. It does not stop VMs; Drain does. A
// full pass runs each period and on Kick; between them, queue changes the
// drivers tell (forge.QueueNotifier) and freed VMs are reacted to one by
// one (react), however many arrived since the last wake-up.
func (m *Manager) Run(ctx context.Context) {
	t := time.NewTicker(m.d.Interval)
	defer t.Stop()
	full := true
	for {
		if full {
			m.retryRemovals(ctx)
			m.reconcile(ctx)
		} else {
			m.react(ctx)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			full = true
		case <-m.kick:
			full = true
		case <-m.demand.wake:
			full = false
		}
	}
}

// reconcile is one pass: read demand and runner states, mark busy VMs,
// start what is missing, remove surplus idle VMs.
func (m *Manager) reconcile(ctx context.Context) {
	// Changes told before the queues are read below are in what they
	// say; those told meanwhile are applied by the next react, in order.
	m.applyDemand(time.Now())
	m.resaveRecords()
	m.mu.Lock()
	draining := m.draining
	m.mu.Unlock()
	if draining {
		return
	}
	pools := m.poolList()
	// Before the reads: a job taken after them may still be counted queued.
	tookAtRead := make([]int64, len(pools))
	for i, p := range pools {
		tookAtRead[i] = p.took.Load()
	}
	jobs := map[string][]forge.Job{}
	states := m.runnerStates // by forge key; each map kept from pass to pass, emptied
	failed := map[string]bool{}
	for _, p := range pools {
		name := p.key
		if _, seen := jobs[name]; seen || failed[name] {
			continue
		}
		js, err := p.forge.QueuedJobs(ctx)
		if err != nil && ctx.Err() != nil {
			return // stopping: the pass ends, and the forge did not fail
		}
		if err != nil {
			p.log.Warn("read queued jobs", "err", err)
			failed[name] = true
			continue
		}
		rs, err := p.forge.Runners(ctx, m.owner)
		if err != nil && ctx.Err() != nil {
			return
		}
		if err != nil {
			p.log.Warn("read runners", "err", err)
			failed[name] = true
			continue
		}
		jobs[name] = js
		if states[name] == nil {
			states[name] = map[string]forge.RunnerState{}
		}
		clear(states[name])
		for _, r := range rs {
			states[name][r.Name] = r
		}
		if m.sweepOwed[name] {
			m.sweepLeftovers(p, rs)
			delete(m.sweepOwed, name)
		}
	}
	views := make([]poolView, len(pools))
	for i, p := range pools {
		views[i] = p.view()
	}
	perPool, unserved := assign(views, jobs)
	m.logUnserved(unserved)
	m.trackQueueWait(pools, perPool, failed, tookAtRead)

	m.mu.Lock()
	for _, p := range pools {
		switch {
		case !failed[p.key]:
			p.readFailing = time.Time{}
		case p.readFailing.IsZero():
			p.readFailing = time.Now()
		}
	}
	m.mu.Unlock()
	for _, p := range pools {
		m.ensureTemplate(ctx, p) // whether the forge answered or not
		if failed[p.key] {
			// Without demand we neither start nor remove; a pool that
			// has not read its forge for a while gives up its claims
			// (claimFor), for hosts that can to serve their jobs.
			if m.readsFailing(p) {
				m.claimFor(ctx, p)
			}
			continue
		}
		m.claimFor(ctx, p)
		m.reconcilePool(ctx, p, states[p.key])
		select {
		case <-p.listed:
		default:
			close(p.listed)
		}
	}
	if len(failed) == 0 {
		m.mu.Lock()
		m.reconciled = true
		m.mu.Unlock()
	}
}

// resaveRecords asks each VM whose last save failed to save its record
// again, on its own goroutine.
func (m *Manager) resaveRecords() {
	m.mu.Lock()
	vms := m.passVMs[:0]
	for _, v := range m.vms {
		vms = append(vms, v)
	}
	m.mu.Unlock()
	for _, v := range vms {
		v.resave()
	}
	clear(vms) // no VM kept alive by the list
	m.passVMs = vms
}

func (m *Manager) logUnserved(jobs []forge.Job) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, j := range jobs {
		m.logUnservedLocked(j)
	}
}

// logUnservedLocked counts and logs a job no pool serves, once. Callers
// hold m.mu.
func (m *Manager) logUnservedLocked(j forge.Job) {
	if len(m.unserved) > 10000 {
		m.unserved = map[string]bool{}
	}
	if !m.unserved[j.ID] {
		m.unserved[j.ID] = true
		m.obs.UnservedJob()
		m.log.Warn("no pool serves this job's labels", "job", j.ID, "labels", j.Labels)
	}
}

// trackQueueWait brings the queued jobs (Manager.waiting, pool.queued)
// level with a full pass's read: jobs new to it are added, those it no
// longer lists have left the queue and report how long they waited.
// Forges whose read failed this round keep their jobs for the next.
func (m *Manager) trackQueueWait(pools []*pool, perPool map[string][]forge.Job, failed map[string]bool, tookAtRead []int64) {
	now := time.Now()
	m.pass++
	m.mu.Lock()
	defer m.mu.Unlock()
	for i, p := range pools {
		if !failed[p.key] {
			p.tookAtRead = tookAtRead[i]
		}
		for _, j := range perPool[p.cfg.Name] {
			k := waitKey{p.key, j.ID}
			q := m.waiting[k]
			if q == nil {
				m.waiting[k] = &queuedJob{pool: p, since: queuedSince(j, now), seen: now, pass: m.pass}
				p.queued++
				continue
			}
			q.pass = m.pass
			if q.pool != p { // a reload changed the pools
				m.dropClaimLocked(k, q, true)
				q.pool.queued--
				p.queued++
				q.pool = p
			}
		}
	}
	for k, q := range m.waiting {
		if q.pass == m.pass || failed[k.forge] {
			continue
		}
		m.obs.QueueWait(q.pool.cfg.Name, now.Sub(q.since))
		m.dropClaimLocked(k, q, false)
		q.pool.queued--
		delete(m.waiting, k)
	}
}

// queuedSince is when j was queued, as far as the forge says and never
// in the future.
func queuedSince(j forge.Job, now time.Time) time.Time {
	if j.QueuedAt.IsZero() || j.QueuedAt.After(now) {
		return now
	}
	return j.QueuedAt
}

func (m *Manager) reconcilePool(ctx context.Context, p *pool, runners map[string]forge.RunnerState) {
	var c counts
	idle := m.passIdle[:0]
	starting := 0 // VMs not yet ready
	vms := m.appendPoolVMs(m.passVMs[:0], p)
	defer func() {
		clear(vms) // no VM kept alive by the lists
		clear(idle)
		m.passVMs, m.passIdle = vms, idle
	}()
	for _, v := range vms {
		ph := v.phase()
		if st, ok := runners[v.runnerName()]; ok && ph == vmstate.Booting && v.adopted && (st.Online || st.Busy) {
			// Adopted while booting: what its agent reported while no
			// one listened is lost, but the forge knows its runner is up
			// (and maybe took a job). Its goroutine takes it from here.
			v.deliver(agentproto.Report{VMID: v.rec.ID, Event: agentproto.EventRunnerReady})
			if st.Busy {
				v.deliver(agentproto.Report{VMID: v.rec.ID, Event: agentproto.EventJobStarted})
			}
		}
		if ph == vmstate.Idle {
			// In memory only: the VM's goroutine saves it and logs it
			// (no file I/O on this loop).
			if st, ok := runners[v.runnerName()]; ok && st.Busy && v.markBusy() {
				ph = vmstate.Busy
			}
		}
		switch ph {
		case vmstate.Busy:
			c.busy++
		case vmstate.Creating, vmstate.Booting, vmstate.Idle:
			c.unbusy++
			if ph != vmstate.Idle {
				starting++
			}
			if ph == vmstate.Idle {
				idle = append(idle, v)
			}
		}
	}
	m.startMissing(ctx, p, c, starting, false)
	m.mu.Lock()
	minIdle, queued := p.minIdle, m.demandLocked(p)
	m.mu.Unlock()
	// Surplus idle VMs go after the idle timeout, oldest first; busy ones never.
	extra := surplus(c, minIdle, queued)
	for _, v := range idle {
		if extra == 0 || p.cfg.Timeouts.Idle <= 0 {
			break
		}
		if time.Since(v.readyAt()) >= p.cfg.Timeouts.Idle && m.retire(ctx, p, v) {
			extra--
		}
	}
}

// startMissing starts the VMs p lacks, given its VMs' counts c, of which
// starting are not ready yet: enough that the VMs not busy cover min_idle
// plus its queued jobs, within max, its ramp after a shortage, its
// back-off and pause. Each start is O(1).
func (m *Manager) startMissing(ctx context.Context, p *pool, c counts, starting int, minIdleOnly bool) {
	m.mu.Lock()
	minIdle, maxVMs, paused, notBefore, ramp, queued := p.minIdle, p.max, p.paused || p.sourceGone, p.notBefore, p.ramp, m.demandLocked(p)
	if p.told {
		// Jobs taken and not told gone may still be counted.
		p.pruneUntold(time.Now())
		queued = max(0, queued-len(p.untold))
	} else {
		// Jobs taken since the queue was read may still be counted.
		queued = max(0, queued-int(p.took.Load()-p.tookAtRead))
	}
	m.mu.Unlock()
	if minIdleOnly {
		queued = 0
	}
	n := toStart(c, minIdle, maxVMs, queued)
	if ramp > 0 {
		// After a host shortage: ramp at a time, as far as it fits.
		n = min(n, max(0, ramp-starting))
	}
	if paused || time.Now().Before(notBefore) {
		n = 0
	}
	for i := 0; i < n; i++ {
		if err := m.startVM(ctx, p); err != nil {
			p.log.Error("start vm", "err", err)
			m.failed(p)
			break
		}
	}
}

// retire ends a surplus idle VM, its runner first: once the forge has
// removed the runner, no job can be handed to it, and only then is the VM
// ended. A forge that refuses (GitHub, for a runner that just took a job;
// Forgejo deletes a busy runner all the same, so there the agent's report
// decides, stopUnlessBusy) or fails leaves the VM as it is: busy, or
// retired at a later pass.
func (m *Manager) retire(ctx context.Context, p *pool, v *vm) bool {
	if v.phase() != vmstate.Idle {
		return false
	}
	rec := v.snapshot()
	cctx, cancel := context.WithTimeout(ctx, removalCallTimeout)
	err := p.forge.Remove(cctx, forge.RunnerRef{ID: rec.RunnerID, Name: rec.RunnerName})
	cancel()
	if err != nil {
		v.log.Warn("surplus idle vm kept: its runner could not be removed first", "runner", rec.RunnerName, "err", err)
		return false
	}
	if !v.stopUnlessBusy(errIdleTimeout) {
		// Its agent reported a job between the forge's answer and now.
		v.log.Error("runner removed from a vm that took a job meanwhile", "runner", rec.RunnerName)
		return false
	}
	return true
}

var (
	errIdleTimeout = errors.New("surplus idle vm reached the idle timeout")
	errDrain       = errors.New("drain")
	errForced      = errors.New("drain grace period ended")
)

// failed records a VM that never became ready and backs the pool off
// exponentially, from 1 s to at most 1 min.
func (m *Manager) failed(p *pool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	p.failures++
	d := time.Second << min(p.failures-1, 6)
	p.notBefore = time.Now().Add(min(d, time.Minute))
	p.log.Warn("pool backing off", "failures", p.failures, "for", min(d, time.Minute))
}

// sourceDeleted records that p's demand source at the forge was deleted,
// as learnt by what began at p's generation gen: p starts no VM (not
// even for min_idle) until a reload hands its scope out again. What a
// reload since gen overtook is old news and ignored. Logged once.
func (m *Manager) sourceDeleted(p *pool, gen uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if p.sourceGone || p.gen != gen {
		return
	}
	p.sourceGone = true
	p.log.Warn("the pool's demand source at the forge is deleted: no VMs start until a reload or restart")
}

// poolGen is p's generation (see pool.gen).
func (m *Manager) poolGen(p *pool) uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return p.gen
}

func (m *Manager) succeeded(p *pool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	p.failures, p.notBefore = 0, time.Time{}
	if p.ramp == 0 {
		return
	}
	p.ramp++
	if p.ramp >= p.max {
		p.log.Info("a vm booted: vms start without a limit again", "cause", p.shortOf)
		p.ramp, p.shortOf = 0, ""
		return
	}
	p.log.Info("a vm booted: more vms may start at once", "cause", p.shortOf, "starting_at_once", p.ramp)
}

// poolVMs are the VMs of p (not of an earlier pool of the same name that
// a reload replaced).
func (m *Manager) poolVMs(p *pool) []*vm { return m.appendPoolVMs(nil, p) }

// appendPoolVMs appends the VMs of p to out.
func (m *Manager) appendPoolVMs(out []*vm, p *pool) []*vm {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, v := range m.vms {
		if v.pool == p {
			out = append(out, v)
		}
	}
	return out
}

// VMs returns a snapshot of every VM's record.
func (m *Manager) VMs() []vmstate.Record {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]vmstate.Record, 0, len(m.vms))
	for _, v := range m.vms {
		out = append(out, v.snapshot())
	}
	return out
}

// startVM creates a VM's record and launches its lifecycle goroutine.
func (m *Manager) startVM(ctx context.Context, p *pool) error {
	id := newID()
	v := newVM(m, p, id)
	m.mu.Lock()
	if m.draining {
		m.mu.Unlock()
		return errors.New("draining")
	}
	m.vms[id] = v
	m.wg.Add(1)
	m.mu.Unlock()
	p.moved("", vmstate.Creating)
	go m.runVM(context.WithoutCancel(ctx), v, nil)
	return nil
}

// runVM runs v's life; once it is gone, its pool is looked at again (a
// replacement for min_idle or a queued job), without a full pass.
func (m *Manager) runVM(ctx context.Context, v *vm, adopted vmm.Machine) {
	defer m.wg.Done()
	v.run(ctx, adopted)
	m.mu.Lock()
	delete(m.vms, v.rec.ID)
	m.mu.Unlock()
	v.pool.moved(v.phase(), "")
	m.demand.tell(demandEvent{pool: v.pool})
}

// Drain stops creating VMs and tells the drivers to stop telling queue
// changes, ends every VM that is not running a job at
// once, waits for busy ones until ctx ends, then ends those too. Runner
// removals still pending are tried once more; those that fail again are
// logged and left, on disk, for the next start. It returns
// errForced-wrapped error when it had to end busy VMs.
func (m *Manager) Drain(ctx context.Context) error {
	m.mu.Lock()
	m.draining = true
	// No more demand: a driver that holds a listener (a GitHub scale
	// set's session) lets it go, so the forge gives its jobs elsewhere.
	for n := range m.notifiers {
		n.NotifyQueue(nil)
	}
	m.notifiers = map[forge.QueueNotifier]bool{}
	m.releaseClaimsLocked()
	m.withdrawLoadsLocked(m.pools, nil)
	for _, v := range m.vms {
		v.stopUnlessBusy(errDrain)
	}
	m.mu.Unlock()
	done := make(chan struct{})
	go func() { m.wg.Wait(); close(done) }()
	select {
	case <-done:
		m.finishRemovals()
		return nil
	case <-ctx.Done():
	}
	m.mu.Lock()
	n := len(m.vms)
	for _, v := range m.vms {
		v.stop(errForced)
	}
	m.mu.Unlock()
	<-done
	m.finishRemovals()
	return fmt.Errorf("%w: ended %d busy vm(s)", errForced, n)
}

// Report routes an agent report to its VM, checking the VM's token. A
// report for an unknown VM is refused: for good once Recover has returned
// (errUnknownVM), as retryable before (ErrNotRecovered).
func (m *Manager) Report(token string, r agentproto.Report) error {
	m.mu.Lock()
	v := m.vms[r.VMID]
	recovered := m.recovered
	m.mu.Unlock()
	if v == nil && !recovered {
		return ErrNotRecovered
	}
	if v == nil || !v.tokenOK(token) {
		return errUnknownVM
	}
	v.deliver(r)
	return nil
}

var errUnknownVM = errors.New("unknown vm or wrong token")

// ErrNotRecovered refuses a report for a VM not known yet while Recover
// runs: the VM may be one a previous run left, about to be adopted, so
// the agent is to send it again.
var ErrNotRecovered = errors.New("vm not known yet: recovery still runs; retry")

// newID is a fresh VM id; its runner's name is the owner's for it, which
// recovery knows again by that id's fixed format.
func newID() string { return forge.NewVMID() }

func parseAddr(s string) netip.Addr {
	a, _ := netip.ParseAddr(s)
	return a
}
