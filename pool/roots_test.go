package pool

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
	"github.com/nixos-fireactions/nixos-fireactions/config"
	"github.com/nixos-fireactions/nixos-fireactions/forge"
	"github.com/nixos-fireactions/nixos-fireactions/vmm"
	"github.com/nixos-fireactions/nixos-fireactions/vmstate"
)

// fakeRoots gives every VM of pool "p" an image root and counts leases;
// after a Reload, the VMs of every pool with vm.image get a root, with the
// image's fakeDigestOf.
type fakeRoots struct {
	mu        sync.Mutex
	prepared  int
	released  int
	dirs      []string
	adopts    []adoptCall       // AdoptVM's calls, in order
	adoptErr  error             // what AdoptVM fails with; nil: it leases
	images    map[string]string // digest by pool once reloaded; nil: "p" boots fakeDigest
	reloadErr error             // what Reload fails with
	reloads   int
	imageDir  string // where the images' files are, when the test makes them
}

// adoptCall is one call of AdoptVM.
type adoptCall struct{ pool, dir, digest string }

// fakeDigest is the image the fake prepares VMs of pool "p" with.
const fakeDigest = "sha256:current"

// fakeDigestOf is the digest the fake gives an image reference.
func fakeDigestOf(image string) string { return "sha256:of-" + image }

func (r *fakeRoots) PrepareVM(_ context.Context, pool, dir string) (VMRoot, bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	digest, ok := fakeDigest, pool == "p"
	if r.images != nil {
		digest, ok = r.images[pool]
	}
	if !ok {
		return nil, false, nil
	}
	r.prepared++
	r.dirs = append(r.dirs, dir)
	return &fakeVMRoot{r: r, digest: digest}, true, nil
}

func (r *fakeRoots) Reload(_ context.Context, pools []config.Pool) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reloads++
	if r.reloadErr != nil {
		return r.reloadErr
	}
	r.images = map[string]string{}
	for _, p := range pools {
		if p.VM.Image != "" {
			r.images[p.Name] = fakeDigestOf(p.VM.Image)
		}
	}
	return nil
}

func (r *fakeRoots) AdoptVM(_ context.Context, pool, dir, digest string) (VMRoot, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.adopts = append(r.adopts, adoptCall{pool, dir, digest})
	if r.adoptErr != nil {
		return nil, r.adoptErr
	}
	return &fakeVMRoot{r: r, digest: digest}, nil
}

func (r *fakeRoots) counts() (int, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.prepared, r.released
}

type fakeVMRoot struct {
	r      *fakeRoots
	digest string
}

func (v *fakeVMRoot) Digest() string { return v.digest }

func (v *fakeVMRoot) Guest(g *forge.GuestOptions) { g.User = "image-user" }

func (v *fakeVMRoot) Apply(spec *vmm.Spec, cfg *agentproto.Config) {
	dir := v.r.imageDir
	if dir == "" {
		dir = "/images"
	}
	spec.Drives = append(spec.Drives, vmm.Drive{ID: "fa-image", Path: filepath.Join(dir, v.digest), ReadOnly: true}, vmm.Drive{ID: "fa-writable"})
	cfg.Root = &agentproto.Root{FSType: "erofs", Image: agentproto.Disk{Serial: "fa-image"}, Writable: agentproto.Disk{Serial: "fa-writable"}}
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
	h.boot.Lock()
	defer h.boot.Unlock()
	for id, cfg := range h.boot.Configs {
		if cfg.Root == nil || cfg.Root.Image.Serial != "fa-image" || cfg.Runner.User != "image-user" {
			t.Errorf("vm %s: root %+v, runner user %q", id, cfg.Root, cfg.Runner.User)
		}
	}
	h.assertNothingLeft(t)
}

// An image VM's record names the image it boots from before its monitor
// starts, so that a restart can lease that image again.
func TestImageRootDigestIsRecorded(t *testing.T) {
	h := newHarness(t, 0, 1, guestHangs, nil)
	h.m.d.Roots = &fakeRoots{} // before any job: no VM has read it yet
	h.forge.enqueue("j1")
	eventually(t, 5*time.Second, "a booting VM", func() bool {
		recs, _ := h.store.List()
		return len(recs) == 1 && recs[0].Phase == vmstate.Booting
	})
	recs, _ := h.store.List()
	if recs[0].Image != fakeDigest {
		t.Fatalf("record image %q, want %q", recs[0].Image, fakeDigest)
	}
}

// An adopted image VM takes its image's lease back before it counts as
// adopted, and gives it back once, when it is gone. A VM whose lease
// cannot be had (its image left the store) is adopted all the same, with
// a warning; a VM without an image asks for no lease.
func TestRecoverLeasesTheImageOfAnAdoptedVM(t *testing.T) {
	tests := []struct {
		name         string
		image        string
		adoptErr     error
		wantAdopts   int
		wantReleased int
		wantLog      string
	}{
		{name: "image root", image: "sha256:old", wantAdopts: 1, wantReleased: 1},
		{name: "initramfs root", image: ""},
		{name: "image gone from the store", image: "sha256:gone", adoptErr: errors.New("image sha256:gone: image not present in the store"),
			wantAdopts: 1, wantLog: "adopting vm without a lease on its image"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, 0, 1, guestRunsOneJob, nil)
			machine := leaveRunningVM(t, h, tt.image)
			// Only the stopped reconcile loop and Recover use the
			// manager's own logger: no one writes it concurrently.
			var logs bytes.Buffer
			h.m.log = slog.New(slog.NewTextHandler(&logs, nil))
			roots := &fakeRoots{adoptErr: tt.adoptErr}
			h.m.d.Roots = roots
			err := h.m.Recover(context.Background(), Leftovers{
				Adopt: func(string, int) (vmm.Machine, error) { return machine, nil },
			})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := h.m.VM("a1"); err != nil {
				t.Fatalf("vm not adopted: %v", err)
			}
			roots.mu.Lock()
			adopts := append([]adoptCall(nil), roots.adopts...)
			roots.mu.Unlock()
			if len(adopts) != tt.wantAdopts {
				t.Fatalf("AdoptVM called %d times (%v), want %d", len(adopts), adopts, tt.wantAdopts)
			}
			if want := (adoptCall{"p", h.store.Dir("a1"), tt.image}); len(adopts) == 1 && adopts[0] != want {
				t.Errorf("AdoptVM(%+v), want %+v", adopts[0], want)
			}
			if got := logs.String(); tt.wantLog != "" && (!strings.Contains(got, tt.wantLog) ||
				!strings.Contains(got, "digest="+tt.image) || !strings.Contains(got, "pool=p") || !strings.Contains(got, "vm=a1")) {
				t.Errorf("log %q, want %q with the vm, pool and digest", got, tt.wantLog)
			}

			finishAdoptedJob(t, h, machine)
			if err := h.drain(t, time.Second); err != nil {
				t.Fatal(err)
			}
			if _, released := roots.counts(); released != tt.wantReleased {
				t.Errorf("lease released %d times, want %d", released, tt.wantReleased)
			}
			h.assertNothingLeft(t)
		})
	}
}
