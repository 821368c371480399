package api

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/forge"
	"github.com/nixos-fireactions/nixos-fireactions/pool"
	"github.com/nixos-fireactions/nixos-fireactions/vmstate"
)

// The manager is the backend the API is built for.
var _ Backend = (*pool.Manager)(nil)

// fakeBackend is a Backend with two pools and two VMs.
type fakeBackend struct {
	mu       sync.Mutex
	pools    []pool.PoolStatus
	vms      []vmstate.Record
	consoles map[string]string // vm id -> console log path
	ready    bool
	kicks    int
	killed   []string
	sources  map[string]bool // pools owning a demand source at the forge
}

func newFakeBackend(created time.Time) *fakeBackend {
	return &fakeBackend{
		pools: []pool.PoolStatus{
			{Name: "small", Forge: "gitea", Scope: "org:acme", Labels: []string{"linux"}, MinIdle: 1, Max: 4,
				VMs: map[vmstate.Phase]int{vmstate.Idle: 1, vmstate.Busy: 1}, Queued: 2},
			{Name: "big", Forge: "gitea", Scope: "repo:acme/x", Labels: []string{"big"}, MinIdle: 0, Max: 2,
				VMs: map[vmstate.Phase]int{}, SourceDeleted: true},
		},
		vms: []vmstate.Record{
			{ID: "vm1", Pool: "small", Phase: vmstate.Busy, PID: 4242, Address: "10.200.0.2",
				RunnerName: "fa-h-vm1", Created: created},
			{ID: "vm2", Pool: "small", Phase: vmstate.Idle, Created: created.Add(30 * time.Second)},
		},
		consoles: map[string]string{},
		ready:    true,
	}
}

func (f *fakeBackend) find(name string) (*pool.PoolStatus, error) {
	for i := range f.pools {
		if f.pools[i].Name == name {
			return &f.pools[i], nil
		}
	}
	return nil, fmt.Errorf("pool %q: %w", name, pool.ErrNotFound)
}

func (f *fakeBackend) Pools() []pool.PoolStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]pool.PoolStatus(nil), f.pools...)
}

func (f *fakeBackend) Pool(name string) (pool.PoolStatus, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p, err := f.find(name)
	if err != nil {
		return pool.PoolStatus{}, err
	}
	return *p, nil
}

func (f *fakeBackend) Scale(name string, minIdle, max *int) (pool.PoolStatus, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p, err := f.find(name)
	if err != nil {
		return pool.PoolStatus{}, err
	}
	newMin, newMax := p.MinIdle, p.Max
	if minIdle != nil {
		newMin = *minIdle
	}
	if max != nil {
		newMax = *max
	}
	if newMin < 0 || newMax < 1 || newMax < newMin {
		return pool.PoolStatus{}, fmt.Errorf("pool %q: min_idle %d and max %d: want 0 <= min_idle <= max and max >= 1", name, newMin, newMax)
	}
	p.MinIdle, p.Max = newMin, newMax
	return *p, nil
}

func (f *fakeBackend) SetPaused(name string, paused bool) (pool.PoolStatus, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p, err := f.find(name)
	if err != nil {
		return pool.PoolStatus{}, err
	}
	p.Paused = paused
	return *p, nil
}

func (f *fakeBackend) SortedVMs() []vmstate.Record {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]vmstate.Record(nil), f.vms...)
}

func (f *fakeBackend) VM(id string) (vmstate.Record, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, v := range f.vms {
		if v.ID == id {
			return v, nil
		}
	}
	return vmstate.Record{}, fmt.Errorf("vm %q: %w", id, pool.ErrNotFound)
}

func (f *fakeBackend) DeleteDemandSource(_ context.Context, name string) error {
	if _, err := f.Pool(name); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.sources[name] {
		return fmt.Errorf("pool %q: %w", name, forge.ErrNoDemandSource)
	}
	delete(f.sources, name)
	return nil
}

func (f *fakeBackend) Kill(id string) error {
	if _, err := f.VM(id); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.killed = append(f.killed, id)
	return nil
}

func (f *fakeBackend) ConsoleLog(id string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if p, ok := f.consoles[id]; ok {
		return p, nil
	}
	return "", fmt.Errorf("vm %q: %w", id, pool.ErrNotFound)
}

func (f *fakeBackend) Ready() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ready
}

func (f *fakeBackend) Kick() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.kicks++
}

func (f *fakeBackend) kickCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.kicks
}

// fakeReceiver accepts deliveries signed "good", kicks and answers 204.
type fakeReceiver struct {
	mu    sync.Mutex
	calls int
}

func (f *fakeReceiver) ServeWebhook(w http.ResponseWriter, r *http.Request, kick func()) {
	f.mu.Lock()
	f.calls++
	f.mu.Unlock()
	if r.Header.Get("X-Signature") != "good" {
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	kick()
	w.WriteHeader(http.StatusNoContent)
}
