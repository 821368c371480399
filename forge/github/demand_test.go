package github

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

// Delivery ids are remembered up to a bound: memory stays flat, and the
// latest ids are the ones recognised.
func TestDeliveryDedupIsBounded(t *testing.T) {
	d := newDemand()
	if !d.fresh("a") || d.fresh("a") {
		t.Fatal("a replay was not recognised")
	}
	for i := range maxDeliveries {
		d.fresh(fmt.Sprint("id-", i))
	}
	if len(d.deliveries) != maxDeliveries || len(d.order) != maxDeliveries {
		t.Fatalf("%d ids held, bound %d", len(d.deliveries), maxDeliveries)
	}
	if !d.fresh("a") {
		t.Fatal("the oldest id was not forgotten")
	}
	if d.fresh(fmt.Sprint("id-", maxDeliveries-1)) {
		t.Fatal("a recent id was forgotten")
	}
}

// Jobs only move forward, whatever order the news comes in; only joining
// or leaving the queue is a change.
func TestJobsOnlyMoveForward(t *testing.T) {
	d := newDemand()
	now := time.Now()
	step := func(s status, wantChanged bool) {
		t.Helper()
		if got, _ := d.observe(jobState{id: 1, repo: "o/r", status: s}, now); got != wantChanged {
			t.Fatalf("status %d: changed %v, want %v", s, got, wantChanged)
		}
	}
	step(statusWaiting, false)
	step(statusQueued, true)
	step(statusQueued, false)
	step(statusWaiting, true) // held for approval: out of the queue
	step(statusWaiting, false)
	step(statusQueued, true) // approved
	step(statusInProgress, true)
	step(statusQueued, false)
	step(statusWaiting, false)
	step(statusCompleted, false)
	step(statusInProgress, false)
	if q := d.queued(func(*jobState) bool { return true }); len(q) != 0 {
		t.Fatalf("queued %+v", q)
	}
	if changed, _ := d.observe(jobState{id: 2, repo: "o/r"}, now); changed {
		t.Fatal("an unknown status counted")
	}
}

// Settled jobs are forgotten after a while, queued ones later, and the
// view never holds more than maxJobs.
func TestDemandIsPruned(t *testing.T) {
	d := newDemand()
	old := time.Now().Add(-2 * keepSettled)
	for i := range 1022 { // the 1024th entry triggers pruning
		d.observe(jobState{id: int64(i), repo: "o/r", status: statusCompleted}, old)
	}
	d.observe(jobState{id: 5000, repo: "o/r", status: statusQueued}, old)
	d.observe(jobState{id: 5001, repo: "o/r", status: statusQueued}, time.Now())
	if len(d.jobs) != 2 {
		t.Fatalf("%d jobs held after pruning, want the 2 queued", len(d.jobs))
	}
}

func TestSignature(t *testing.T) {
	body := []byte(`{"action":"queued"}`)
	// HMAC-SHA256 of body with key "s", from openssl dgst -sha256 -hmac s.
	const sig = "sha256=5b2366f87b963ffe0b9749ee9c69263ba85bcd4ca0c94ab5e67686b14e7d337d"
	for _, tc := range []struct {
		header string
		ok     bool
	}{
		{sig, true},
		{sig[:len(sig)-1] + "e", false},
		{"", false},
		{"sha1=00", false},
		{"sha256=", false},
		{"sha256=zz", false},
		{"sha256=" + fmt.Sprintf("%064x", 0), false},
	} {
		if signed("s", tc.header, body) != tc.ok {
			t.Errorf("header %q: got %v", tc.header, !tc.ok)
		}
	}
}

// A runner counts as busy while a job a source said it took is in
// progress, and no longer once the job is done or forgotten.
func TestRunnerBusyFollowsItsJobs(t *testing.T) {
	d := newDemand()
	now := time.Now()
	d.observe(jobState{id: 1, repo: "o/r", status: statusQueued}, now)
	if d.runnerBusy("r1") {
		t.Fatal("busy before any job started")
	}
	d.observe(jobState{id: 1, repo: "o/r", status: statusInProgress, runner: "r1"}, now)
	d.observe(jobState{id: 2, repo: "o/r", status: statusInProgress, runner: "r1"}, now)
	d.observe(jobState{id: 2, repo: "o/r", status: statusInProgress, runner: "r1"}, now) // a repeat
	if !d.runnerBusy("r1") || d.runnerBusy("r2") {
		t.Fatal("r1 not busy, or r2 busy")
	}
	d.observe(jobState{id: 1, repo: "o/r", status: statusCompleted}, now)
	if !d.runnerBusy("r1") {
		t.Fatal("r1 not busy with job 2 still running")
	}
	d.observe(jobState{id: 2, repo: "o/r", status: statusCompleted, runner: "r1"}, now)
	if d.runnerBusy("r1") || len(d.busy) != 0 {
		t.Fatalf("r1 busy after its jobs ended: %v", d.busy)
	}
	d.observe(jobState{id: 3, repo: "o/r", status: statusInProgress, runner: "r3"}, now)
	d.mu.Lock()
	d.forget(d.jobs[3])
	d.mu.Unlock()
	if d.runnerBusy("r3") {
		t.Fatal("r3 busy after its job was forgotten")
	}
}

// A view past maxJobs is cut to pruneTo, the oldest news first, so that
// the jobs that follow do not each sort the whole view again.
func TestFullDemandIsCutWellBelowItsBound(t *testing.T) {
	d := newDemand()
	start := time.Now()
	for i := range maxJobs + 1 {
		d.observe(jobState{id: int64(i), repo: "o/r", status: statusInProgress}, start.Add(time.Duration(i)))
	}
	if len(d.jobs) != pruneTo || d.jobs[maxJobs] == nil || d.jobs[0] != nil {
		t.Fatalf("%d jobs held past the bound, want the newest %d", len(d.jobs), pruneTo)
	}
	d.observe(jobState{id: maxJobs + 1, repo: "o/r", status: statusInProgress}, start.Add(maxJobs+1))
	if len(d.jobs) != pruneTo+1 {
		t.Fatalf("%d jobs held after one more, want %d", len(d.jobs), pruneTo+1)
	}
}

// Two pools covering one unpolled repository both read a job waiting
// for approval in their rounds: the second read, its next one already
// spaced by the first, does not double the wait again. Reads one after
// another, each when due, still double it: 2, 4, 8 periods.
func TestWaitingJobBackOffOncePerRead(t *testing.T) {
	d := newDemand()
	now := time.Unix(1_700_000_000, 0)
	const period = time.Second
	d.observe(jobState{id: 1, repo: "o/r", status: statusWaiting}, now)
	var waits []time.Duration
	for range 3 {
		d.backOff(1, now, period)                       // one pool's round
		d.backOff(1, now.Add(time.Millisecond), period) // the other's, just after
		d.mu.Lock()
		waits = append(waits, d.jobs[1].checkWait)
		now = d.jobs[1].checkAfter // the next read, when due
		d.mu.Unlock()
	}
	if want := []time.Duration{2 * period, 4 * period, 8 * period}; !slices.Equal(waits, want) {
		t.Fatalf("waits %v, want %v", waits, want)
	}
}
