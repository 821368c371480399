package github

import (
	"context"

	"github.com/nixos-fireactions/nixos-fireactions/forge"
)

var (
	_ forge.OwnQueue       = (*Pool)(nil)
	_ forge.CapacitySetter = (*Pool)(nil)
)

// OwnQueue reports whether the pool's queue is its own: in scale-set
// mode GitHub assigns each job to one scale set, the pool's, so no other
// pool of the scope may count or take it.
func (p *Pool) OwnQueue() bool { return p.ss != nil }

// SetCapacity sets the scale set's maximum capacity, how many runners it
// tells GitHub it can take at once, from its next poll on; without a
// scale set there is nothing to tell.
func (p *Pool) SetCapacity(_ context.Context, n int) error {
	if p.ss != nil {
		p.ss.SetMaxCapacity(n)
	}
	return nil
}
