package github

import (
	"strconv"
	"sync"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/forge"
)

// runnerCache is the scope's runner list, read at most once a period,
// and the removals still to retry.
type runnerCache struct {
	mu           sync.Mutex
	at           time.Time
	list         []forge.RunnerState
	pendingIDs   map[int64]string
	pendingNames map[string]bool
}

func (c *runnerCache) get(ttl time.Duration) ([]forge.RunnerState, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.at.IsZero() || time.Since(c.at) >= ttl {
		return nil, false
	}
	return append([]forge.RunnerState(nil), c.list...), true
}

func (c *runnerCache) put(list []forge.RunnerState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.list, c.at = list, time.Now()
}

// drop forgets a removed runner.
func (c *runnerCache) drop(id int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.pendingIDs, id)
	ref := strconv.FormatInt(id, 10)
	for i, r := range c.list {
		if r.ID == ref {
			c.list = append(c.list[:i:i], c.list[i+1:]...)
			break
		}
	}
}

func (c *runnerCache) addPendingID(id int64, name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pendingIDs == nil {
		c.pendingIDs = map[int64]string{}
	}
	c.pendingIDs[id] = name
	c.at = time.Time{} // list again soon, to retry
}

func (c *runnerCache) addPendingName(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pendingNames == nil {
		c.pendingNames = map[string]bool{}
	}
	c.pendingNames[name] = true
	c.at = time.Time{}
}

func (c *runnerCache) pending() (map[int64]string, map[string]bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ids, names := map[int64]string{}, map[string]bool{}
	for k, v := range c.pendingIDs {
		ids[k] = v
	}
	for k := range c.pendingNames {
		names[k] = true
	}
	return ids, names
}

func (c *runnerCache) settleName(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.pendingNames, name)
}

// settleAbsent ends the pending removals of runners no longer listed.
func (c *runnerCache) settleAbsent(listed map[int64]bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for id := range c.pendingIDs {
		if !listed[id] {
			delete(c.pendingIDs, id)
		}
	}
	for name := range c.pendingNames {
		found := false
		for _, r := range c.list {
			found = found || r.Name == name
		}
		if !found {
			delete(c.pendingNames, name)
		}
	}
}
