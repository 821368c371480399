package github

import (
	"container/list"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/forge"
)

// status is a job's state as far as demand goes, in the order GitHub
// moves jobs through them. A job never goes back, but for one step:
// a queued job can fall back to waiting (an environment's protection
// rule holds it for approval) and be queued again once approved.
type status int

const (
	statusWaiting    status = iota + 1 // waiting, requested, pending: not yet for a runner
	statusQueued                       // waiting for a runner: demand
	statusInProgress                   // a runner took it
	statusCompleted                    // done, cancelled or gone
)

// parseStatus maps GitHub's job statuses and webhook actions.
func parseStatus(s string) status {
	switch s {
	case "queued":
		return statusQueued
	case "in_progress":
		return statusInProgress
	case "completed":
		return statusCompleted
	case "waiting", "requested", "pending":
		return statusWaiting
	}
	return 0
}

// jobState is what is known of one job.
type jobState struct {
	id         int64
	repo       string // OWNER/NAME
	enterprise string // from a delivery, when it names one
	labels     []string
	status     status
	queuedAt   time.Time // GitHub's created_at
	seen       time.Time // when a source last said this status
	runner     string    // the runner that took it
	// delivered marks news from a webhook delivery (observe's argument).
	delivered bool
	// checkWait and checkAfter space out the reconciler's reads of a job
	// waiting for approval in a repository not polled: each read that
	// finds it still waiting doubles the wait before the next (backOff);
	// a delivery for the job starts again.
	checkWait  time.Duration
	checkAfter time.Time

	// inQueue is its place in demand.queue while it is queued.
	inQueue *list.Element
	// job is the job as the pool manager gets it, built once per
	// spelling of the labels (jobGen: Client.labelGen when built).
	job    forge.Job
	jobGen uint64
}

// Memory bounds of the demand view.
const (
	maxJobs          = 50000
	pruneTo          = maxJobs - maxJobs/8 // what a view past maxJobs is cut to
	maxDeliveries    = 10000
	keepSettled      = time.Hour      // in-progress and completed jobs, for ordering
	keepQueued       = 48 * time.Hour // GitHub gives up on a queued job after a day
	verifyBatchLimit = 20             // queued jobs checked one by one per round
)

// demand merges what webhooks and polls say about jobs. Every source only
// ever moves a job forward (but for queued back to waiting, see status),
// so deliveries out of order, replays and polls racing deliveries cannot
// bring a started or finished job back into the queue, and a job is one
// entry however many sources report it: it is never started twice.
type demand struct {
	mu   sync.Mutex
	jobs map[int64]*jobState
	// queue holds the queued jobs (*jobState) in the order they joined
	// it: joining and leaving are O(1), and a read of the queue walks
	// it, neither copying nor sorting the jobs it does not return.
	queue *list.List
	// notify is told each job that joined (queued) or left the queue,
	// under mu, so in the order it happens; it reports whether every
	// pool the job concerns was told. nil: nobody listens.
	notify func(j *jobState, queued bool) bool
	// busy counts, by runner name, the jobs in progress a source said
	// the runner took: kept as jobs move, read per runner in O(1).
	busy       map[string]int
	deliveries map[string]struct{}
	order      []string // delivery ids, oldest first, a ring of maxDeliveries
	next       int
}

func newDemand() *demand {
	return &demand{jobs: map[int64]*jobState{}, deliveries: map[string]struct{}{}, order: make([]string, 0, maxDeliveries), queue: list.New(), busy: map[string]int{}}
}

// fresh records a delivery id and reports whether it is new. It
// remembers the last maxDeliveries ids.
func (d *demand) fresh(id string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, dup := d.deliveries[id]; dup {
		return false
	}
	if len(d.order) < maxDeliveries {
		d.order = append(d.order, id)
	} else {
		delete(d.deliveries, d.order[d.next])
		d.order[d.next] = id
		d.next = (d.next + 1) % maxDeliveries
	}
	d.deliveries[id] = struct{}{}
	return true
}

// observe records what a source says of a job and reports whether the
// queue changed (a job joined or left it) and, if it did, whether every
// pool the job concerns has been told (demand.notify). O(1) but for the
// occasional prune.
func (d *demand) observe(j jobState, now time.Time) (changed, told bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	cur, ok := d.jobs[j.id]
	if !ok {
		if j.status == 0 {
			return false, false
		}
		j.seen = now
		j.inQueue, j.job, j.jobGen = nil, forge.Job{}, 0
		cur = &j
		d.jobs[j.id] = cur
		d.countBusy(cur, 1)
		told = d.requeue(cur)
		d.prune(now)
		return j.status == statusQueued, told
	}
	if j.status == 0 || (j.status < cur.status && !backToWaiting(cur.status, j.status)) {
		return false, false // older news
	}
	d.countBusy(cur, -1)
	defer d.countBusy(cur, 1)
	if len(cur.labels) == 0 {
		cur.labels = j.labels
	}
	if cur.enterprise == "" {
		cur.enterprise = j.enterprise
	}
	if j.runner != "" {
		cur.runner = j.runner
	}
	if j.delivered {
		cur.checkWait, cur.checkAfter = 0, time.Time{}
	}
	cur.seen = now
	if j.status == cur.status {
		return false, false
	}
	was := cur.status
	cur.status = j.status
	if was != statusQueued && j.status != statusQueued {
		return false, false
	}
	return true, d.requeue(cur)
}

// maxWaitingCheck bounds the wait between two reads of a job held for
// approval (demand.backOff): a lost approval is found within it.
const maxWaitingCheck = 30 * time.Minute

// backOff spaces out the reads of job id, still waiting for approval
// after one at now: twice the last wait, at least two poll periods, at
// most maxWaitingCheck (or one period, if longer). A read in a round
// that another pool covering the repository already spaced (its next
// read still ahead) is the same read: the wait stays.
func (d *demand) backOff(id int64, now time.Time, period time.Duration) {
	d.mu.Lock()
	defer d.mu.Unlock()
	cur := d.jobs[id]
	if cur == nil || cur.status != statusWaiting || cur.checkAfter.After(now) {
		return
	}
	cur.checkWait = min(max(2*cur.checkWait, 2*period), max(maxWaitingCheck, period))
	cur.checkAfter = now.Add(cur.checkWait)
}

// backToWaiting reports whether news of status to is a queued job held
// again for approval: the one step back the view takes.
func backToWaiting(from, to status) bool {
	return from == statusQueued && to == statusWaiting
}

// requeue puts j in the queue or takes it out, as its status says, and
// tells whoever listens when that changed it. Callers hold d.mu.
func (d *demand) requeue(j *jobState) (told bool) {
	queued := j.status == statusQueued
	if queued == (j.inQueue != nil) {
		return false
	}
	if queued {
		j.inQueue = d.queue.PushBack(j)
	} else {
		d.queue.Remove(j.inQueue)
		j.inQueue = nil
	}
	return d.notify != nil && d.notify(j, queued)
}

// prune drops what no longer matters and, past maxJobs, the oldest
// entries down to pruneTo, so that a full view is sorted once per
// maxJobs-pruneTo new jobs, not at each: O(log N) per job amortized.
// Callers hold d.mu.
func (d *demand) prune(now time.Time) {
	if len(d.jobs) <= maxJobs && len(d.jobs)%1024 != 0 {
		return
	}
	for _, j := range d.jobs {
		keep := keepSettled
		if j.status <= statusQueued {
			keep = keepQueued
		}
		if now.Sub(j.seen) > keep {
			d.forget(j)
		}
	}
	if len(d.jobs) <= maxJobs {
		return
	}
	all := make([]*jobState, 0, len(d.jobs))
	for _, j := range d.jobs {
		all = append(all, j)
	}
	sort.Slice(all, func(a, b int) bool { return all[a].seen.Before(all[b].seen) })
	for _, j := range all[:len(all)-pruneTo] {
		d.forget(j)
	}
}

// countBusy adds n for j's runner to busy if j is in progress on a known
// runner. Callers hold d.mu.
func (d *demand) countBusy(j *jobState, n int) {
	if j.status != statusInProgress || j.runner == "" {
		return
	}
	if d.busy[j.runner] += n; d.busy[j.runner] <= 0 {
		delete(d.busy, j.runner)
	}
}

// forget drops j: a queued job leaves the queue. Callers hold d.mu.
func (d *demand) forget(j *jobState) {
	d.countBusy(j, -1)
	delete(d.jobs, j.id)
	if j.inQueue != nil {
		d.queue.Remove(j.inQueue)
		j.inQueue = nil
		if d.notify != nil {
			d.notify(j, false)
		}
	}
}

// queued lists the queued jobs match accepts, in the order they joined
// the queue.
func (d *demand) queued(match func(*jobState) bool) []jobState {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []jobState
	for e := d.queue.Front(); e != nil; e = e.Next() {
		if j := e.Value.(*jobState); match(j) {
			out = append(out, *j)
		}
	}
	return out
}

// queuedJobs is the queued jobs match accepts as the pool manager gets
// them (job builds or reuses each one), in the order they joined the
// queue: one walk of the queue, no copy of the jobs, no sort.
func (d *demand) queuedJobs(match func(*jobState) bool, job func(*jobState) forge.Job) []forge.Job {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]forge.Job, 0, d.queue.Len())
	for e := d.queue.Front(); e != nil; e = e.Next() {
		if j := e.Value.(*jobState); match(j) {
			out = append(out, job(j))
		}
	}
	return out
}

// unconfirmed lists the jobs of status st match accepts that no source
// has confirmed since before, oldest news first, at most n.
func (d *demand) unconfirmed(st status, match func(*jobState) bool, before time.Time, n int) []jobState {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []jobState
	for _, j := range d.jobs {
		if j.status == st && j.seen.Before(before) && match(j) {
			out = append(out, *j)
		}
	}
	sort.Slice(out, func(a, b int) bool { return out[a].seen.Before(out[b].seen) })
	return out[:min(n, len(out))]
}

// runnerBusy reports whether a source said the runner took a job still
// running: O(1).
func (d *demand) runnerBusy(name string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.busy[name] > 0
}

// jobOfRunner is the newest job a source said the named runner took,
// among the jobs covers accepts (repo, enterprise).
func (d *demand) jobOfRunner(runner string, covers func(repo, enterprise string) bool) (jobState, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var best *jobState
	for _, j := range d.jobs {
		if j.runner == runner && covers(j.repo, j.enterprise) && (best == nil || j.id > best.id) {
			best = j
		}
	}
	if best == nil {
		return jobState{}, false
	}
	return *best, true
}

// forgeJob is a queued job for the pool manager, its labels spelled as
// the configuration spells them (GitHub's labels are case-insensitive).
func forgeJob(j jobState, spelling func(string) string) forge.Job {
	labels := make([]string, len(j.labels))
	for i, l := range j.labels {
		labels[i] = spelling(l)
	}
	return forge.Job{ID: strconv.FormatInt(j.id, 10), Labels: labels, Repo: j.repo, QueuedAt: j.queuedAt}
}

// jobOf is j as the pool manager gets it, built once per spelling of the
// labels. Callers hold c.demand.mu.
func (c *Client) jobOf(j *jobState) forge.Job {
	gen := c.labelGen.Load()
	if j.job.ID == "" || j.jobGen != gen {
		j.job, j.jobGen = forgeJob(*j, c.spelling), gen
	}
	return j.job
}

// notifyQueue tells the pools of c that cover j and listen
// (Pool.NotifyQueue) that j joined or left the queue, and reports
// whether all that cover it listen. It runs under c.demand.mu.
func (c *Client) notifyQueue(j *jobState, queued bool) bool {
	c.mu.Lock()
	pools := c.pools
	c.mu.Unlock()
	all, any := true, false
	for _, p := range pools {
		if p.ss != nil || !p.covers(j.repo, j.enterprise) {
			continue // a scale set's pool has its demand from GitHub's assignment
		}
		c.mu.Lock()
		tell := p.notify
		c.mu.Unlock()
		if tell == nil {
			all = false
			continue
		}
		any = true
		tell(forge.QueueChange{Job: c.jobOf(j), Queued: queued})
	}
	return all && any
}

// spelling is the configuration's spelling of a label, or the label.
func (c *Client) spelling(l string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s, ok := c.labels[strings.ToLower(l)]; ok {
		return s
	}
	return l
}
