package pool

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
	"github.com/nixos-fireactions/nixos-fireactions/forge"
	"github.com/nixos-fireactions/nixos-fireactions/vmm"
)

// fakeRoots gives every VM of pool "p" an image root and counts leases.
type fakeRoots struct {
	mu       sync.Mutex
	prepared int
	released int
	dirs     []string
}

func (r *fakeRoots) PrepareVM(_ context.Context, pool, dir string) (VMRoot, bool, error) {
	if pool != "p" {
		return nil, false, nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.prepared++
	r.dirs = append(r.dirs, dir)
	return &fakeVMRoot{r: r}, true, nil
}

func (r *fakeRoots) counts() (int, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.prepared, r.released
}

type fakeVMRoot struct{ r *fakeRoots }

func (v *fakeVMRoot) Guest(g *forge.GuestOptions) { g.User = "image-user" }

func (v *fakeVMRoot) Apply(spec *vmm.Spec, cfg *agentproto.Config) {
	spec.Drives = append(spec.Drives, vmm.Drive{ID: "fa-image", ReadOnly: true})
	cfg.Root = &agentproto.Root{FSType: "erofs", Image: agentproto.Disk{Serial: "fa-image"}}
}

func (v *fakeVMRoot) Release() {
	v.r.mu.Lock()
	defer v.r.mu.Unlock()
	v.r.released++
}

// An image pool's VMs get their root before the runner is registered (as
// the image's user), boot with it, and give it back when they are gone.
func TestImageRootsArePreparedPerVMAndReleased(t *testing.T) {
	h := newHarness(t, 0, 2, guestRunsOneJob, nil)
	roots := &fakeRoots{}
	h.m.d.Roots = roots // before any job: no VM has read it yet
	h.forge.enqueue("j1", "j2", "j3")
	eventually(t, 5*time.Second, "3 jobs finished", func() bool {
		h.forge.mu.Lock()
		defer h.forge.mu.Unlock()
		return len(h.forge.finished) == 3
	})
	if err := h.drain(t, time.Second); err != nil {
		t.Fatal(err)
	}
	prepared, released := roots.counts()
	if prepared < 3 || prepared != released {
		t.Fatalf("roots prepared %d, released %d; want one per VM (at least 3), all released", prepared, released)
	}
	h.boot.mu.Lock()
	defer h.boot.mu.Unlock()
	for id, cfg := range h.boot.cfgs {
		if cfg.Root == nil || cfg.Root.Image.Serial != "fa-image" || cfg.Runner.User != "image-user" {
			t.Errorf("vm %s: root %+v, runner user %q", id, cfg.Root, cfg.Runner.User)
		}
	}
	h.assertNothingLeft(t)
}
