package forge

import "sync"

// Deliveries remembers the ids of the last deliveries a forge's webhook
// endpoint took, so that one redelivered (a retry, a replay) is taken
// once. The zero value is not usable: NewDeliveries.
type Deliveries struct {
	mu   sync.Mutex
	set  map[string]struct{}
	ring []string // oldest first once full, from next
	next int
}

// NewDeliveries remembers the last n delivery ids.
func NewDeliveries(n int) *Deliveries {
	n = max(n, 1)
	return &Deliveries{set: make(map[string]struct{}, n), ring: make([]string, 0, n)}
}

// First records id and reports whether it was not seen before.
func (d *Deliveries) First(id string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, dup := d.set[id]; dup {
		return false
	}
	if len(d.ring) < cap(d.ring) {
		d.ring = append(d.ring, id)
	} else {
		delete(d.set, d.ring[d.next])
		d.ring[d.next] = id
		d.next = (d.next + 1) % len(d.ring)
	}
	d.set[id] = struct{}{}
	return true
}
