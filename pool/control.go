package pool

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/nixos-fireactions/nixos-fireactions/forge"
	"github.com/nixos-fireactions/nixos-fireactions/vmstate"
)

// PoolStatus is a pool as operators see it.
type PoolStatus struct {
	Name    string   `json:"name"`
	Forge   string   `json:"forge"`
	Scope   string   `json:"scope"`
	Labels  []string `json:"labels"`
	MinIdle int      `json:"min_idle"`
	Max     int      `json:"max"`
	Paused  bool     `json:"paused"`
	// SourceDeleted: the pool's demand source at the forge (a GitHub
	// scale set) was deleted (delete-scaleset); it starts no VM until a
	// reload or restart hands its scope out again.
	SourceDeleted bool                  `json:"source_deleted"`
	VMs           map[vmstate.Phase]int `json:"vms"`
	// Queued is the number of waiting jobs assigned to this pool at the
	// last reconcile.
	Queued int `json:"queued"`
	// RemovalsPending counts the runners of the pool's ended VMs whose
	// removal at the forge failed and is being retried.
	RemovalsPending int `json:"removals_pending"`
}

// ErrNotFound is returned for an unknown pool or VM.
var ErrNotFound = errors.New("not found")

// Pools returns every pool's status, in configuration order.
func (m *Manager) Pools() []PoolStatus {
	pools := m.poolList()
	out := make([]PoolStatus, 0, len(pools))
	for _, p := range pools {
		out = append(out, m.status(p))
	}
	return out
}

// Pool returns one pool's status.
func (m *Manager) Pool(name string) (PoolStatus, error) {
	p := m.poolNamed(name)
	if p == nil {
		return PoolStatus{}, fmt.Errorf("pool %q: %w", name, ErrNotFound)
	}
	return m.status(p), nil
}

func (m *Manager) status(p *pool) PoolStatus {
	vms := map[vmstate.Phase]int{}
	for _, v := range m.poolVMs(p) {
		vms[v.phase()]++
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	pending := 0
	for _, r := range m.removals {
		if r.rec.Pool == p.cfg.Name {
			pending++
		}
	}
	return PoolStatus{
		Name: p.cfg.Name, Forge: p.cfg.Forge, Scope: p.cfg.Scope, Labels: p.cfg.Labels,
		MinIdle: p.minIdle, Max: p.max, Paused: p.paused, SourceDeleted: p.sourceGone, VMs: vms, Queued: p.queued,
		RemovalsPending: pending,
	}
}

// Scale changes a pool's min_idle and/or max at run time (nil leaves a
// value as it is). Lowering them never stops a busy VM: surplus idle VMs
// go after the idle timeout, busy ones when their job ends.
func (m *Manager) Scale(name string, minIdle, max *int) (PoolStatus, error) {
	p := m.poolNamed(name)
	if p == nil {
		return PoolStatus{}, fmt.Errorf("pool %q: %w", name, ErrNotFound)
	}
	m.mu.Lock()
	newMin, newMax := p.minIdle, p.max
	if minIdle != nil {
		newMin = *minIdle
	}
	if max != nil {
		newMax = *max
	}
	if newMin < 0 || newMax < 1 || newMax < newMin {
		m.mu.Unlock()
		return PoolStatus{}, fmt.Errorf("pool %q: min_idle %d and max %d: want 0 <= min_idle <= max and max >= 1", name, newMin, newMax)
	}
	p.minIdle, p.max = newMin, newMax
	m.mu.Unlock()
	m.tellCapacity(p)
	p.log.Info("pool scaled", "min_idle", newMin, "max", newMax)
	m.Kick()
	return m.status(p), nil
}

// SetPaused pauses (no new VMs; running ones finish) or resumes a pool.
func (m *Manager) SetPaused(name string, paused bool) (PoolStatus, error) {
	p := m.poolNamed(name)
	if p == nil {
		return PoolStatus{}, fmt.Errorf("pool %q: %w", name, ErrNotFound)
	}
	m.mu.Lock()
	p.paused = paused
	m.mu.Unlock()
	m.tellCapacity(p)
	p.log.Info("pool paused", "paused", paused)
	m.Kick()
	return m.status(p), nil
}

// DeleteDemandSource deletes the demand source the pool's forge scope
// owns at the forge (a GitHub runner scale set), which a restart keeps:
// for a pool or host being retired. The pool takes no demand from it
// until its scope is handed out again (restart or reload).
func (m *Manager) DeleteDemandSource(ctx context.Context, name string) error {
	p := m.poolNamed(name)
	if p == nil {
		return fmt.Errorf("pool %q: %w", name, ErrNotFound)
	}
	d, ok := forge.Unwrap(p.forge).(forge.DemandSourceDeleter)
	if !ok {
		return fmt.Errorf("pool %q: %w", name, forge.ErrNoDemandSource)
	}
	gen := m.poolGen(p)
	if err := d.DeleteDemandSource(ctx); err != nil {
		return fmt.Errorf("pool %q: %w", name, err)
	}
	m.sourceDeleted(p, gen)
	return nil
}

// VM returns one VM's record.
func (m *Manager) VM(id string) (vmstate.Record, error) {
	m.mu.Lock()
	v := m.vms[id]
	m.mu.Unlock()
	if v == nil {
		return vmstate.Record{}, fmt.Errorf("vm %q: %w", id, ErrNotFound)
	}
	return public(v.snapshot()), nil
}

// public is a record as operators see it: without the agent's token or
// the runner's memo (which may hold the runner's own credential).
func public(r vmstate.Record) vmstate.Record {
	r.AgentToken, r.RunnerMemo = "", ""
	return r
}

// SortedVMs returns every VM's record, oldest first.
func (m *Manager) SortedVMs() []vmstate.Record {
	recs := m.VMs()
	for i := range recs {
		recs[i] = public(recs[i])
	}
	sort.Slice(recs, func(i, j int) bool { return recs[i].Created.Before(recs[j].Created) })
	return recs
}

// Kill ends a VM now, whatever it is doing; its runner is removed.
func (m *Manager) Kill(id string) error {
	m.mu.Lock()
	v := m.vms[id]
	m.mu.Unlock()
	if v == nil {
		return fmt.Errorf("vm %q: %w", id, ErrNotFound)
	}
	v.stop(errKilledByOperator)
	return nil
}

var errKilledByOperator = errors.New("killed by an operator")

// ConsoleLog returns the path of a VM's serial console log: the live VM's,
// or the one kept after a failure.
func (m *Manager) ConsoleLog(id string) (string, error) {
	if _, err := m.VM(id); err == nil {
		return filepath.Join(m.d.Store.Dir(id), "console.log"), nil
	}
	if m.d.ConsoleDir != "" && filepath.Base(id) == id {
		path := filepath.Join(m.d.ConsoleDir, id+".log")
		if _, err := os.Stat(path); err == nil {
			return path, nil
		}
	}
	return "", fmt.Errorf("vm %q: %w", id, ErrNotFound)
}

// Forges returns the driver each current pool uses, by pool name.
func (m *Manager) Forges() map[string]forge.Forge {
	out := map[string]forge.Forge{}
	for _, p := range m.poolList() {
		out[p.cfg.Name] = p.forge
	}
	return out
}

// Ready reports whether every pool has been reconciled at least once.
func (m *Manager) Ready() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.reconciled
}
