package github

import (
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/forge"
)

// status is a job's state as far as demand goes, in the order GitHub
// moves jobs through them; a job never goes back.
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
}

// Memory bounds of the demand view.
const (
	maxJobs          = 50000
	maxDeliveries    = 10000
	keepSettled      = time.Hour      // in-progress and completed jobs, for ordering
	keepQueued       = 48 * time.Hour // GitHub gives up on a queued job after a day
	verifyBatchLimit = 20             // queued jobs checked one by one per round
)

// demand merges what webhooks and polls say about jobs. Every source only
// ever moves a job forward, so deliveries out of order, replays and polls
// racing deliveries cannot bring a job back into the queue, and a job is
// one entry however many sources report it: it is never started twice.
type demand struct {
	mu         sync.Mutex
	jobs       map[int64]*jobState
	deliveries map[string]struct{}
	order      []string // delivery ids, oldest first, a ring of maxDeliveries
	next       int
}

func newDemand() *demand {
	return &demand{jobs: map[int64]*jobState{}, deliveries: map[string]struct{}{}, order: make([]string, 0, maxDeliveries)}
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
// queue changed (a job joined or left it).
func (d *demand) observe(j jobState, now time.Time) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	cur, ok := d.jobs[j.id]
	if !ok {
		if j.status == 0 {
			return false
		}
		j.seen = now
		d.jobs[j.id] = &j
		d.prune(now)
		return j.status == statusQueued
	}
	if j.status < cur.status || j.status == 0 {
		return false // older news
	}
	if len(cur.labels) == 0 {
		cur.labels = j.labels
	}
	if cur.enterprise == "" {
		cur.enterprise = j.enterprise
	}
	if j.runner != "" {
		cur.runner = j.runner
	}
	cur.seen = now
	if j.status == cur.status {
		return false
	}
	was := cur.status
	cur.status = j.status
	return was == statusQueued || j.status == statusQueued
}

// prune drops what no longer matters, and the oldest entries beyond
// maxJobs. Callers hold d.mu.
func (d *demand) prune(now time.Time) {
	if len(d.jobs) < maxJobs && len(d.jobs)%1024 != 0 {
		return
	}
	for id, j := range d.jobs {
		keep := keepSettled
		if j.status <= statusQueued {
			keep = keepQueued
		}
		if now.Sub(j.seen) > keep {
			delete(d.jobs, id)
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
	for _, j := range all[:len(all)-maxJobs] {
		delete(d.jobs, j.id)
	}
}

// queued lists the queued jobs match accepts, oldest first.
func (d *demand) queued(match func(*jobState) bool) []jobState {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []jobState
	for _, j := range d.jobs {
		if j.status == statusQueued && match(j) {
			out = append(out, *j)
		}
	}
	sort.Slice(out, func(a, b int) bool { return out[a].id < out[b].id })
	return out
}

// unconfirmed lists queued jobs match accepts that no source has
// confirmed since before, oldest news first, at most n.
func (d *demand) unconfirmed(match func(*jobState) bool, before time.Time, n int) []jobState {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []jobState
	for _, j := range d.jobs {
		if j.status == statusQueued && j.seen.Before(before) && match(j) {
			out = append(out, *j)
		}
	}
	sort.Slice(out, func(a, b int) bool { return out[a].seen.Before(out[b].seen) })
	return out[:min(n, len(out))]
}

// busyRunners are the runners a source said took a job still running.
func (d *demand) busyRunners() map[string]bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := map[string]bool{}
	for _, j := range d.jobs {
		if j.status == statusInProgress && j.runner != "" {
			out[j.runner] = true
		}
	}
	return out
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

// spelling is the configuration's spelling of a label, or the label.
func (c *Client) spelling(l string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s, ok := c.labels[strings.ToLower(l)]; ok {
		return s
	}
	return l
}
