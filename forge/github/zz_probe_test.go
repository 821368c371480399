package github_test

import (
	"os"
	"context"
	"sync"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/forge"
)

type timedForge struct {
	forge.Forge
	mu  sync.Mutex
	reg []time.Duration
	q   []time.Duration
}

func (t *timedForge) Register(ctx context.Context, s forge.RunnerSpec) (*forge.Runner, error) {
	st := time.Now()
	r, err := t.Forge.Register(ctx, s)
	t.mu.Lock()
	t.reg = append(t.reg, time.Since(st))
	t.mu.Unlock()
	return r, err
}
func (t *timedForge) QueuedJobs(ctx context.Context) ([]forge.Job, error) {
	st := time.Now()
	r, err := t.Forge.QueuedJobs(ctx)
	t.mu.Lock()
	t.q = append(t.q, time.Since(st))
	t.mu.Unlock()
	return r, err
}

func shmDir(t interface{ TempDir() string; Cleanup(func()) }) string {
	d, err := os.MkdirTemp("/dev/shm", "bench")
	if err != nil {
		panic(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}
