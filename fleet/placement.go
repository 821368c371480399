package fleet

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Load is what a host publishes of one pool, for the others to place
// jobs by: Free is how many more jobs it would claim now (max less busy
// VMs less claims held; 0 when it cannot start VMs), Idle its idle or
// booting VMs that no claim of it covers (each takes a job the forge
// hands it, with no new VM).
type Load struct {
	Free int `json:"free"`
	Idle int `json:"idle"`
}

// maxPools bounds the pools a host publishes (a pool's name is its key).
const maxPools = 256

// publishDelay gathers the loads told close together into one write of
// the presence key.
const publishDelay = 50 * time.Millisecond

// peer is what another host last published, and when this host read it.
type peer struct {
	pools map[string]Load
	seen  time.Time
}

// Publish tells the fleet pool's load on this host. It does not block:
// the presence key is rewritten shortly after a change, and with every
// refresh.
func (f *Fleet) Publish(pool string, free, idle int) {
	l := Load{Free: max(free, 0), Idle: max(idle, 0)}
	f.mu.Lock()
	old, ok := f.loads[pool]
	if ok && old == l || !ok && len(f.loads) >= maxPools {
		f.mu.Unlock()
		return
	}
	f.loads[pool] = l
	f.mu.Unlock()
	select {
	case f.dirty <- struct{}{}:
	default:
	}
}

// Elsewhere reports whether another live host is better placed for the
// next job of pool than this host, whose free capacity for it is free
// and which has no idle VM for it: one that publishes idle VMs for the
// pool (one of them takes the job with no new VM), or more free
// capacity (ties go to the host with the most free). Hosts whose
// presence was not read within the claim TTL are ignored. No I/O.
func (f *Fleet) Elsewhere(pool string, free int) bool {
	now := time.Now()
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, p := range f.peers {
		if now.Sub(p.seen) >= f.opt.ClaimTTL {
			continue
		}
		if l := p.pools[pool]; l.Idle > 0 || l.Free > free {
			return true
		}
	}
	return false
}

// presenceValue is this host's presence key's value now.
func (f *Fleet) presenceValue() []byte {
	f.mu.Lock()
	p := presence{Instance: f.instance, Since: f.since, Claims: len(f.held), Pools: maps.Clone(f.loads)}
	f.mu.Unlock()
	v, _ := json.Marshal(p)
	return v
}

// watchPeers follows the other hosts' presence keys until ctx ends or
// the watcher stops, keeping what they publish (f.peers) and when the
// last update of any key arrived (f.watched: this host's own refreshes
// arrive every TTL/3 while the watch works).
func (f *Fleet) watchPeers(ctx context.Context, w jetstream.KeyWatcher) {
	defer func() { _ = w.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-w.Updates():
			if !ok {
				return
			}
			if e == nil {
				continue // the keys present at the start have all been read
			}
			now := time.Now()
			f.mu.Lock()
			f.watched = now
			switch {
			case e.Key() == f.opt.HostID:
			case e.Operation() != jetstream.KeyValuePut:
				delete(f.peers, e.Key())
			default:
				var p presence
				_, known := f.peers[e.Key()]
				if json.Unmarshal(e.Value(), &p) == nil && len(p.Pools) <= maxPools && (known || len(f.peers) < maxPeers) {
					// Seen when read: this host's clock, not the
					// server's (entries older than the TTL are gone
					// from the bucket anyway).
					f.peers[e.Key()] = peer{pools: p.Pools, seen: now}
				}
			}
			f.mu.Unlock()
		}
	}
}

// maxPeers bounds the hosts this host keeps loads of.
const maxPeers = 4096

// watch starts following the other hosts' loads (stopping the watch
// before, if any). Called by Join and by the loop when no update has
// arrived for a TTL (the watch may have died with a connection).
func (f *Fleet) watch() error {
	wctx, cancel := context.WithCancel(context.Background())
	w, err := f.hosts.WatchAll(wctx)
	if err != nil {
		cancel()
		return fmt.Errorf("fleet: watch KV bucket %s: %w", HostsBucket, err)
	}
	f.mu.Lock()
	if f.stopWatch != nil {
		f.stopWatch()
	}
	f.stopWatch = cancel
	f.watched = time.Now()
	f.mu.Unlock()
	go f.watchPeers(wctx, w)
	return nil
}
