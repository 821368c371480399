package agent

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
)

// reportQueue sends reports in order on its own goroutine, so that a host
// that is slow or unreachable never holds up the job. Events are stamped
// and logged when they happen, not when they are sent.
type reportQueue struct {
	rep    *Reporter
	vmID   string
	uptime func() time.Duration
	logf   func(string, ...any)

	mu      sync.Mutex
	ch      chan agentproto.Report
	closed  bool
	started bool
	cancel  context.CancelFunc
	done    chan struct{}
}

func newReportQueue(rep *Reporter, vmID string, uptime func() time.Duration, logf func(string, ...any)) *reportQueue {
	return &reportQueue{rep: rep, vmID: vmID, uptime: uptime, logf: logf,
		ch: make(chan agentproto.Report, 64), done: make(chan struct{})}
}

// add stamps the report with the VM's ID and, unless it has one, the
// uptime; logs it and queues it. It never blocks.
func (q *reportQueue) add(r agentproto.Report) {
	r.VMID = q.vmID
	if r.Uptime == 0 {
		r.Uptime = q.uptime()
	}
	msg := fmt.Sprintf("event %s at +%.3fs", r.Event, r.Uptime.Seconds())
	if r.Event == agentproto.EventRunnerExited {
		msg += fmt.Sprintf(" exit code %d", r.ExitCode)
	}
	if r.Message != "" {
		msg += ": " + r.Message
	}
	q.logf("%s", msg)
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return
	}
	select {
	case q.ch <- r:
	default:
		q.logf("report queue full, dropping %s", r.Event)
	}
}

// start begins sending; before it, reports only queue up (nothing can be
// sent before the network is up).
func (q *reportQueue) start(ctx context.Context) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.started || q.closed {
		return
	}
	q.started = true
	ctx, q.cancel = context.WithCancel(ctx)
	go func() {
		defer close(q.done)
		for r := range q.ch {
			start := q.uptime()
			if err := q.rep.Send(ctx, r); err != nil {
				q.logf("report %s not delivered: %v", r.Event, err)
			} else if d := q.uptime() - start; d > 500*time.Millisecond {
				q.logf("report %s delivered after %.3fs", r.Event, d.Seconds())
			}
		}
	}()
}

// close stops taking reports and waits at most timeout for the queued ones
// to be sent.
func (q *reportQueue) close(timeout time.Duration) {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return
	}
	q.closed = true
	close(q.ch)
	started := q.started
	q.mu.Unlock()
	if !started {
		if n := len(q.ch); n > 0 {
			q.logf("%d reports not sent: the network never came up", n)
		}
		return
	}
	defer q.cancel()
	select {
	case <-q.done:
	case <-time.After(timeout):
		q.logf("gave up waiting for reports after %s", timeout)
	}
}
