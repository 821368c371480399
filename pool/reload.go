package pool

import (
	"context"
	"errors"
	"fmt"
	"reflect"

	"github.com/nixos-fireactions/nixos-fireactions/config"
	"github.com/nixos-fireactions/nixos-fireactions/forge"
)

// ReloadResult says what a reload did to each pool, by name.
type ReloadResult struct {
	Added, Changed, Scaled, Removed, Unchanged []string
}

var errPoolRetired = errors.New("pool removed or changed by a reload")

// Reload applies a new set of pools. A pool whose only change is min_idle
// or max is scaled in place; a pool with any other change is replaced:
// its idle and booting VMs end, its busy VMs finish their jobs untouched,
// and new VMs come from the new settings. Removed pools are retired the
// same way. Pools that did not change are not touched at all. forges holds
// the drivers of the new configuration, by pool name.
//
// The image roots (Deps.Roots) are reloaded first, pulling what a new or
// changed image pool boots, so its first VM starts from its new image; a
// pull that fails refuses the whole reload and the running pools stay.
func (m *Manager) Reload(ctx context.Context, pools []config.Pool, forges map[string]forge.Forge) (ReloadResult, error) {
	var res ReloadResult
	for _, pc := range pools {
		if forges[pc.Name] == nil {
			return res, fmt.Errorf("reload: pool %q: forge %q not connected", pc.Name, pc.Forge)
		}
	}
	if m.d.Roots != nil {
		if err := m.d.Roots.Reload(ctx, pools); err != nil {
			return res, fmt.Errorf("reload: image roots: %w", err)
		}
	}
	m.mu.Lock()
	old := map[string]*pool{}
	for _, p := range m.pools {
		old[p.cfg.Name] = p
	}
	var next []*pool
	var retired []*pool
	for _, pc := range pools {
		op := old[pc.Name]
		delete(old, pc.Name)
		switch {
		case op != nil && reflect.DeepEqual(op.cfg, pc):
			next = append(next, op)
			res.Unchanged = append(res.Unchanged, pc.Name)
		case op != nil && sameButSize(op.cfg, pc):
			op.cfg.MinIdle, op.cfg.Max = pc.MinIdle, pc.Max
			op.minIdle, op.max = pc.MinIdle, pc.Max
			m.tellCapacity(op)
			next = append(next, op)
			res.Scaled = append(res.Scaled, pc.Name)
		default:
			np := newPool(pc, forges[pc.Name], m.log)
			m.tellCapacity(np)
			next = append(next, np)
			if op != nil {
				retired = append(retired, op)
				res.Changed = append(res.Changed, pc.Name)
			} else {
				res.Added = append(res.Added, pc.Name)
			}
		}
	}
	for name, op := range old {
		retired = append(retired, op)
		res.Removed = append(res.Removed, name)
	}
	m.pools = next
	m.withdrawLoadsLocked(retired, next)
	for _, p := range next {
		p.sourceGone = false // its scope is handed out again
		p.gen++
	}
	m.listenLocked()
	for _, v := range m.vms {
		for _, op := range retired {
			if v.pool == op {
				v.stopUnlessBusy(errPoolRetired)
			}
		}
	}
	m.mu.Unlock()
	m.log.Info("configuration reloaded", "added", res.Added, "changed", res.Changed,
		"scaled", res.Scaled, "removed", res.Removed, "unchanged", res.Unchanged)
	m.Kick()
	return res, nil
}

// sameButSize reports whether two pool configurations differ at most in
// min_idle and max.
func sameButSize(a, b config.Pool) bool {
	a.MinIdle, a.Max, b.MinIdle, b.Max = 0, 0, 0, 0
	return reflect.DeepEqual(a, b)
}

// poolList is a snapshot of the current pools.
func (m *Manager) poolList() []*pool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]*pool(nil), m.pools...)
}
