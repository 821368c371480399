package pool

import (
	"context"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/forge"
)

// capacityTimeout bounds one telling of a pool's capacity to its forge.
const capacityTimeout = 20 * time.Second

// tellCapacity tells p's forge, if it takes it (forge.CapacitySetter),
// how many runners p can take: its max, or 0 while paused. It does not
// wait: the call goes on its own goroutine, one at a time per pool, each
// telling the values current when it runs, so the last told is the
// latest. Failures are logged. Callers may hold m.mu.
func (m *Manager) tellCapacity(p *pool) {
	cs, ok := forge.CapacitySetterOf(p.forge)
	if !ok {
		return
	}
	go func() {
		p.capMu.Lock()
		defer p.capMu.Unlock()
		m.mu.Lock()
		n := p.max
		if p.paused {
			n = 0
		}
		m.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), capacityTimeout)
		defer cancel()
		if err := cs.SetCapacity(ctx, n); err != nil {
			p.log.Warn("tell the forge the pool's capacity", "capacity", n, "err", err)
		}
	}()
}
