package github

import (
	"context"
	"sync"
)

// setGate orders a scale set's existence: registers and listeners that
// ensure it and ask for a runner in it hold the shared side; a delete
// holds the sole side, so that nothing under way creates the set again
// once deleted. Unlike sync.RWMutex, every wait honours a context: a
// delete waiting for a register stuck in the network gives up when its
// caller does. A waiting delete keeps new shared holders out.
type setGate struct {
	mu      sync.Mutex
	shared  int
	sole    bool
	changed chan struct{} // closed at the next change; nil: none waits
}

// share waits until no delete holds or waits for the gate, then holds
// its shared side.
func (g *setGate) share(ctx context.Context) error {
	g.mu.Lock()
	for g.sole {
		if err := g.waitLocked(ctx); err != nil {
			return err
		}
	}
	g.shared++
	g.mu.Unlock()
	return nil
}

// unshare lets go of the shared side.
func (g *setGate) unshare() {
	g.mu.Lock()
	g.shared--
	g.changedLocked()
	g.mu.Unlock()
}

// hold waits until the gate is free, then holds it alone; if ctx ends
// first it holds nothing and returns ctx's error.
func (g *setGate) hold(ctx context.Context) error {
	g.mu.Lock()
	for g.sole {
		if err := g.waitLocked(ctx); err != nil {
			return err
		}
	}
	g.sole = true
	for g.shared > 0 {
		if err := g.waitLocked(ctx); err != nil {
			g.mu.Lock()
			g.sole = false
			g.changedLocked()
			g.mu.Unlock()
			return err
		}
	}
	g.mu.Unlock()
	return nil
}

// release lets go of the sole side.
func (g *setGate) release() {
	g.mu.Lock()
	g.sole = false
	g.changedLocked()
	g.mu.Unlock()
}

// waitLocked waits, g.mu held, for the next change or ctx's end; it
// returns with g.mu held, or unlocked with ctx's error.
func (g *setGate) waitLocked(ctx context.Context) error {
	if g.changed == nil {
		g.changed = make(chan struct{})
	}
	ch := g.changed
	g.mu.Unlock()
	select {
	case <-ch:
		g.mu.Lock()
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// changedLocked wakes every waiter.
func (g *setGate) changedLocked() {
	if g.changed != nil {
		close(g.changed)
		g.changed = nil
	}
}
