package github

import (
	"context"
	"fmt"
	"time"

	"github.com/actions/scaleset"
	"github.com/actions/scaleset/listener"

	"github.com/nixos-fireactions/nixos-fireactions/forge"
)

// start runs the listener until stop; a running one is left as it is.
func (s *scaleSetDemand) start() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cancel != nil {
		return
	}
	s.deleted = false // a listener ensures the scale set again
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel, s.done = cancel, make(chan struct{})
	go s.run(ctx, s.done)
}

// running reports whether the listener runs (start was called, stop not
// since).
func (s *scaleSetDemand) running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cancel != nil
}

// stop ends the listener; its session is deleted in the background
// (wait reports when that is done). Once stopped, stop again waits for
// the same deletion: the daemon's drain stops the demand before it
// quiesces the client, whose Quiesce must still wait for it.
func (s *scaleSetDemand) stop() (wait <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cancel == nil {
		if s.done != nil {
			return s.done // the last listener's, closed once it ended
		}
		done := make(chan struct{})
		close(done)
		return done
	}
	s.cancel()
	s.cancel = nil
	return s.done
}

// run keeps a session open and listens, replacing a lost session and
// waiting out one another listener holds, with bounded backoff.
func (s *scaleSetDemand) run(ctx context.Context, done chan struct{}) {
	defer close(done)
	wait := s.o.BackoffMin
	for ctx.Err() == nil {
		listened, err := s.listenOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		if listened {
			wait = s.o.BackoffMin
		}
		if isUnauthorized(err) {
			// The admin token was refused before the client's own clock
			// said it expired: a new client fetches a new one.
			s.resetClient()
		}
		switch {
		case isSessionConflict(err):
			s.p.log.Info("scale set's session still held (a previous run's?); waiting it out", append(s.logAttrs(), "wait", wait)...)
		default:
			s.p.log.Warn("scale set listener stopped; starting a new session", append(s.logAttrs(), "err", err, "wait", wait)...)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		wait = min(2*wait, s.o.BackoffMax)
	}
}

// listenOnce ensures the scale set, opens a session and listens until an
// error or ctx ends; listened: a session was opened.
func (s *scaleSetDemand) listenOnce(ctx context.Context) (listened bool, err error) {
	if err := s.gate.share(ctx); err != nil {
		return false, err
	}
	id, err := s.ensure(ctx)
	s.gate.unshare()
	if err != nil {
		return false, err
	}
	cl, err := s.scaleClient(ctx)
	if err != nil {
		return false, err
	}
	sess, err := cl.MessageSessionClient(ctx, id, s.owner, scaleset.WithRetryableHTTPClint(s.retryable(s.poll)))
	if err != nil {
		return false, fmt.Errorf("github: session of scale set %s: %w", s.name, err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
		defer cancel()
		if err := sess.Close(cctx); err != nil {
			s.p.log.Warn("could not delete the scale set's session; GitHub drops it when idle", append(s.logAttrs(), "err", err)...)
		}
	}()
	s.mu.Lock()
	s.sessions++
	capacity := s.max
	s.mu.Unlock()
	l, err := listener.New(sess, listener.Config{ScaleSetID: id, MaxRunners: capacity, Logger: s.quietLog()},
		listener.WithMetricsRecorder(s))
	if err != nil {
		return true, fmt.Errorf("github: listener of scale set %s: %w", s.name, err)
	}
	s.mu.Lock()
	s.lis = l
	s.mu.Unlock()
	s.p.log.Info("scale set listening", s.logAttrs()...)
	err = l.Run(ctx, s)
	s.mu.Lock()
	s.lis = nil
	s.mu.Unlock()
	return true, err
}

// resetClient drops the scale-set client: the next call makes a new
// one, with a new admin token.
func (s *scaleSetDemand) resetClient() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.client = nil
}

// SetMaxCapacity changes the capacity the scale set reports (its pool's
// VM slots), from the next poll on.
func (s *scaleSetDemand) SetMaxCapacity(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.max = n
	if s.lis != nil {
		s.lis.SetMaxRunners(n)
	}
}

// RecordStatistics implements listener.MetricsRecorder: each message's
// statistics, read before the message is acknowledged and the desired
// count handled.
func (s *scaleSetDemand) RecordStatistics(st *scaleset.RunnerScaleSetStatistic) {
	if st == nil {
		return
	}
	s.mu.Lock()
	s.stats, s.known = *st, true
	s.mu.Unlock()
	// The queue follows at once, before the message is acknowledged (a
	// round trip): a job a runner took leaves it as soon as GitHub says
	// so, narrowing the time a full pass could count it as waiting while
	// its VM is already busy.
	s.setQueued(max(st.TotalAssignedJobs-st.TotalRunningJobs, 0))
}

// RecordJobStarted implements listener.MetricsRecorder.
func (s *scaleSetDemand) RecordJobStarted(*scaleset.JobStarted) {}

// RecordJobCompleted implements listener.MetricsRecorder.
func (s *scaleSetDemand) RecordJobCompleted(*scaleset.JobCompleted) {}

// RecordDesiredRunners implements listener.MetricsRecorder.
func (s *scaleSetDemand) RecordDesiredRunners(int) {}

// HandleJobStarted implements listener.Scaler: logged; the VM's guest
// reports its job itself.
func (s *scaleSetDemand) HandleJobStarted(_ context.Context, j *scaleset.JobStarted) error {
	s.p.log.Debug("scale set job started", append(s.logAttrs(), "job", j.JobID, "runner", j.RunnerName)...)
	return nil
}

// HandleJobCompleted implements listener.Scaler: logged; the runner, a
// JIT runner of one job, is removed with its VM by the pool.
func (s *scaleSetDemand) HandleJobCompleted(_ context.Context, j *scaleset.JobCompleted) error {
	s.p.log.Debug("scale set job completed", append(s.logAttrs(), "job", j.JobID, "runner", j.RunnerName, "result", j.Result)...)
	return nil
}

// HandleDesiredRunnerCount implements listener.Scaler: of the jobs
// assigned, those no runner runs yet are the pool's queue.
func (s *scaleSetDemand) HandleDesiredRunnerCount(_ context.Context, assigned int) (int, error) {
	s.mu.Lock()
	running := 0
	if s.known {
		running = s.stats.TotalRunningJobs
	}
	s.mu.Unlock()
	s.setQueued(max(assigned-running, 0))
	return assigned, nil
}

// slot is the queued job standing for the n-th waiting assignment.
func (s *scaleSetDemand) slot(n int) forge.Job {
	return forge.Job{ID: fmt.Sprintf("scaleset:%s:%d", s.name, n), Labels: s.labels}
}

// setQueued tells the slots that join or leave the queue.
func (s *scaleSetDemand) setQueued(n int) {
	s.mu.Lock()
	was := s.queued
	s.queued = n
	s.mu.Unlock()
	s.p.c.mu.Lock()
	tell := s.p.notify
	s.p.c.mu.Unlock()
	if tell == nil {
		return
	}
	for i := was; i < n; i++ {
		j := s.slot(i)
		j.QueuedAt = time.Now()
		tell(forge.QueueChange{Job: j, Queued: true})
	}
	for i := n; i < was; i++ {
		tell(forge.QueueChange{Job: s.slot(i), Queued: false})
	}
}

// queuedJobs are the slots queued now.
func (s *scaleSetDemand) queuedJobs() []forge.Job {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]forge.Job, s.queued)
	for i := range out {
		out[i] = s.slot(i)
	}
	return out
}
