package pool

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/forge"
	"github.com/nixos-fireactions/nixos-fireactions/vmstate"
)

// A runner whose removal failed (the forge unreachable, or answering
// errors) is never dropped: its VM's record stays on disk in phase
// Deregistering, emptied of everything else, and the removal is retried
// with back-off at every reconcile tick until the forge confirms the
// runner gone; then the record goes. A restart finds such records and
// goes on retrying (see Recover).

// Back-off between attempts to remove one runner.
const (
	removalFirstRetry = 2 * time.Second
	removalMaxRetry   = 30 * time.Second
	// removalCallTimeout bounds one attempt, so an unanswering forge
	// never holds the retries up.
	removalCallTimeout = 20 * time.Second
)

// removal is a runner removal still to be done.
type removal struct {
	rec      vmstate.Record
	forge    forge.Forge
	attempts int
	next     time.Time
	// keepRecord: the VM's record stays once the runner is gone (its
	// monitor may still run: see removeUnsupervisedRunner).
	keepRecord bool
}

// removeLaterKeepingRecord retries the removal of the runner of a VM whose
// monitor may still run (its record stays as it is, for the next start):
// until the forge confirms, that runner could take jobs no one times out.
func (m *Manager) removeLaterKeepingRecord(f forge.Forge, rec vmstate.Record) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.removals[rec.ID] = &removal{rec: rec, forge: f, attempts: 1, next: time.Now().Add(removalFirstRetry), keepRecord: true}
}

// deregisterLater keeps the runner of a VM that is gone for a later
// removal: the record, in phase Deregistering without the host resources
// it no longer holds, stays on disk until the forge confirms.
func (m *Manager) deregisterLater(f forge.Forge, rec vmstate.Record, cause error) {
	rec.Phase = vmstate.Deregistering
	rec.PID, rec.TAP, rec.MAC, rec.Address, rec.AgentToken, rec.Image = 0, "", "", "", "", ""
	rec.RunnerMemo = "" // its job was failed, or needed not be: nothing reads it again
	rec.Seq = 0         // numbered by Save, after whatever the VM saved last
	log := m.log.With("vm", rec.ID, "pool", rec.Pool, "runner", rec.RunnerName, "runner_id", rec.RunnerID)
	if err := m.d.Store.Save(&rec); err != nil {
		log.Error("runner removal pending but its record cannot be saved: a restart now would forget it", "err", err)
	}
	if err := m.d.Store.Empty(rec.ID); err != nil {
		log.Error("empty the directory of a vm whose runner removal is pending", "err", err)
	}
	m.mu.Lock()
	m.removals[rec.ID] = &removal{rec: rec, forge: f, attempts: 1, next: time.Now().Add(removalFirstRetry)}
	m.mu.Unlock()
	log.Warn("runner removal failed; retrying until the forge confirms", "err", cause, "retry_in", removalFirstRetry)
}

// PendingRemovals names the runners whose removal at their forge is still
// to be confirmed, sorted.
func (m *Manager) PendingRemovals() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]string, 0, len(m.removals))
	for _, r := range m.removals {
		out = append(out, r.rec.RunnerName)
	}
	sort.Strings(out)
	return out
}

// retryRemovals starts one pass over the removals that are due, unless a
// pass still runs: a forge that does not answer must not hold up the
// reconcile loop. The pass ends with ctx (the end of Run); a drain then
// tries once more (finishRemovals).
func (m *Manager) retryRemovals(ctx context.Context) {
	m.mu.Lock()
	if m.retrying || len(m.removals) == 0 {
		m.mu.Unlock()
		return
	}
	m.retrying = true
	m.mu.Unlock()
	go func() {
		m.removing.Lock()
		defer m.removing.Unlock()
		m.removeDue(ctx, time.Now())
		m.mu.Lock()
		m.retrying = false
		m.mu.Unlock()
	}()
}

// removeDue tries every removal due at now once.
func (m *Manager) removeDue(ctx context.Context, now time.Time) {
	m.mu.Lock()
	var due []*removal
	for _, r := range m.removals {
		if !now.Before(r.next) {
			due = append(due, r)
		}
	}
	m.mu.Unlock()
	for _, r := range due {
		m.tryRemoval(ctx, r)
	}
}

// tryRemoval makes one attempt; on success the record goes, otherwise the
// next attempt is scheduled further out.
func (m *Manager) tryRemoval(ctx context.Context, r *removal) bool {
	log := m.log.With("vm", r.rec.ID, "pool", r.rec.Pool, "runner", r.rec.RunnerName, "runner_id", r.rec.RunnerID)
	cctx, cancel := context.WithTimeout(ctx, removalCallTimeout)
	err := r.forge.Remove(cctx, forge.RunnerRef{ID: r.rec.RunnerID, Name: r.rec.RunnerName})
	cancel()
	m.mu.Lock()
	if err != nil {
		r.attempts++
		attempts := r.attempts
		wait := min(removalFirstRetry<<min(attempts-1, 8), removalMaxRetry)
		r.next = time.Now().Add(wait)
		m.mu.Unlock()
		log.Warn("runner removal still pending", "attempts", attempts, "retry_in", wait, "err", err)
		return false
	}
	delete(m.removals, r.rec.ID)
	attempts := r.attempts + 1
	m.mu.Unlock()
	log.Info("runner removed", "attempts", attempts)
	if r.keepRecord {
		return true
	}
	if err := m.d.Store.Remove(r.rec.ID); err != nil {
		log.Error("remove vm directory", "err", err)
	}
	return true
}

// finishRemovals tries every pending removal once more, at the end of a
// drain, and says which are left for the next start. It waits for a pass
// of retryRemovals still running (whose calls end with Run's context or
// removalCallTimeout), so that no runner is removed twice at once.
func (m *Manager) finishRemovals() {
	m.removing.Lock()
	defer m.removing.Unlock()
	m.mu.Lock()
	all := make([]*removal, 0, len(m.removals))
	for _, r := range m.removals {
		all = append(all, r)
	}
	m.mu.Unlock()
	for _, r := range all {
		ctx, cancel := context.WithTimeout(context.Background(), removalCallTimeout)
		ok := m.tryRemoval(ctx, r)
		cancel()
		if !ok {
			m.log.Warn("runner removal left for the next start", "vm", r.rec.ID, "pool", r.rec.Pool,
				"runner", r.rec.RunnerName, "runner_id", r.rec.RunnerID)
		}
	}
}

// removalForge is the forge a leftover record's runner is removed at.
func (m *Manager) removalForge(pool string) (forge.Forge, error) {
	if p := m.poolNamed(pool); p != nil {
		return p.forge, nil
	}
	return nil, fmt.Errorf("pool %q is no longer configured", pool)
}
