package forge

import "context"

// OwnQueue is implemented by a driver whose scope's queue is its pool's
// alone (a GitHub runner scale set: GitHub assigns a job to one scale
// set), not shared with the other pools of the same forge and scope. The
// pool manager reads such a queue for its pool only and gives what it
// tells to that pool, never to another by labels.
type OwnQueue interface {
	OwnQueue() bool
}

// CapacitySetter is implemented by a driver that tells the forge how
// many runners its pool can take at once (a GitHub scale set's maximum
// capacity), so the forge assigns it no more jobs than that: the pool's
// max, or 0 while it is paused.
type CapacitySetter interface {
	SetCapacity(ctx context.Context, n int) error
}

// HasOwnQueue reports whether f, looking through wrappers, says its
// queue is its pool's alone.
func HasOwnQueue(f Forge) bool {
	o, ok := find[OwnQueue](f)
	return ok && o.OwnQueue()
}

// CapacitySetterOf is f's CapacitySetter, looking through wrappers.
func CapacitySetterOf(f Forge) (CapacitySetter, bool) { return find[CapacitySetter](f) }

// find is the first of f and the drivers it wraps that implements T.
func find[T any](f Forge) (T, bool) {
	for f != nil {
		if t, ok := f.(T); ok {
			return t, true
		}
		u, ok := f.(Unwrapper)
		if !ok {
			break
		}
		f = u.Unwrap()
	}
	var zero T
	return zero, false
}
