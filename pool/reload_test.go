package pool

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/config"
	"github.com/nixos-fireactions/nixos-fireactions/forge"
	"github.com/nixos-fireactions/nixos-fireactions/vmstate"
)

func (h *harness) poolConfig() config.Pool {
	h.m.mu.Lock()
	defer h.m.mu.Unlock()
	return h.m.pools[0].cfg
}

func idsIn(h *harness, phase vmstate.Phase) map[string]bool {
	out := map[string]bool{}
	for _, r := range h.m.VMs() {
		if r.Phase == phase {
			out[r.ID] = true
		}
	}
	return out
}

// TestReloadTouchesOnlyWhatChanged follows one pool through reloads: the
// same settings touch nothing, a new size scales in place, any other
// change replaces the pool without ending its busy VM, and removal
// retires it the same way.
func TestReloadTouchesOnlyWhatChanged(t *testing.T) {
	h := newHarness(t, 1, 3, guestRunsOneJob, nil)
	h.hv.jobTime = 600 * time.Millisecond
	h.forge.enqueue("long")
	eventually(t, 2*time.Second, "one busy and one idle", func() bool {
		p := h.m.Phases()
		return p[vmstate.Busy] == 1 && p[vmstate.Idle] == 1
	})
	busy, idle := idsIn(h, vmstate.Busy), idsIn(h, vmstate.Idle)
	forges := map[string]forge.Forge{"p": h.forge}
	same := h.poolConfig()

	res, err := h.m.Reload(t.Context(), []config.Pool{same}, forges)
	if err != nil || len(res.Unchanged) != 1 {
		t.Fatalf("same settings: %+v, %v", res, err)
	}
	bigger := same
	bigger.Max = 4
	if res, _ = h.m.Reload(t.Context(), []config.Pool{bigger}, forges); len(res.Scaled) != 1 {
		t.Fatalf("new max: %+v", res)
	}
	time.Sleep(100 * time.Millisecond)
	for id := range idle {
		if _, err := h.m.VM(id); err != nil {
			t.Fatal("scaling in place ended an idle VM")
		}
	}
	if st, _ := h.m.Pool("p"); st.Max != 4 {
		t.Fatalf("max after reload = %d", st.Max)
	}

	relabelled := bigger
	relabelled.Labels = []string{"linux", "new"}
	if res, _ = h.m.Reload(t.Context(), []config.Pool{relabelled}, forges); len(res.Changed) != 1 {
		t.Fatalf("new labels: %+v", res)
	}
	eventually(t, 2*time.Second, "the old idle VM to end", func() bool {
		for id := range idle {
			if _, err := h.m.VM(id); err == nil {
				return false
			}
		}
		return true
	})
	for id := range busy {
		if r, err := h.m.VM(id); err != nil || r.Phase != vmstate.Busy {
			t.Fatalf("the busy VM was touched by a pool change: %+v %v", r, err)
		}
	}
	eventually(t, 2*time.Second, "the busy job to finish", func() bool {
		h.forge.mu.Lock()
		defer h.forge.mu.Unlock()
		_, ok := h.forge.finished["long"]
		return ok
	})
	eventually(t, 2*time.Second, "a VM of the new pool idle", func() bool { return h.m.Phases()[vmstate.Idle] == 1 })

	other := relabelled
	other.Name = "q"
	forges["q"] = h.forge
	if res, _ = h.m.Reload(t.Context(), []config.Pool{other}, forges); len(res.Removed) != 1 || len(res.Added) != 1 {
		t.Fatalf("rename: %+v", res)
	}
	eventually(t, 2*time.Second, "pool p's VMs gone and q's idle", func() bool {
		for _, r := range h.m.VMs() {
			if r.Pool == "p" {
				return false
			}
		}
		return h.m.Phases()[vmstate.Idle] == 1
	})
	if _, err := h.m.Reload(t.Context(), []config.Pool{other}, map[string]forge.Forge{}); err == nil {
		t.Fatal("a reload with an unconnected forge was accepted")
	}
}

// A reload that changes a pool's image gives the VMs started after it the
// new image, while a VM busy with a job keeps the root it booted (its
// lease is not given back before it is gone). A reload whose image roots
// cannot be had is refused: the running pool stays as it was.
func TestReloadGivesNewVMsTheNewImage(t *testing.T) {
	h := newHarness(t, 0, 3, guestRunsOneJob, nil)
	roots := &fakeRoots{}
	h.m.d.Roots = roots // before any job: no VM has read it yet
	h.hv.jobTime = 600 * time.Millisecond
	h.forge.enqueue("long")
	eventually(t, 2*time.Second, "one busy VM", func() bool { return h.m.Phases()[vmstate.Busy] == 1 })
	busy := idsIn(h, vmstate.Busy)
	forges := map[string]forge.Forge{"p": h.forge}

	moved := h.poolConfig()
	moved.VM.Image = "registry.example/ci/runner:v2"
	if res, err := h.m.Reload(t.Context(), []config.Pool{moved}, forges); err != nil || len(res.Changed) != 1 {
		t.Fatalf("new image: %+v, %v", res, err)
	}
	for id := range busy {
		r, err := h.m.VM(id)
		if err != nil || r.Phase != vmstate.Busy || r.Image != fakeDigest {
			t.Fatalf("the busy VM after the reload: %+v %v; want it busy on %s", r, err, fakeDigest)
		}
	}
	if _, released := roots.counts(); released != 0 {
		t.Fatalf("%d roots released while their VMs still run", released)
	}
	h.forge.enqueue("next")
	want := fakeDigestOf(moved.VM.Image)
	eventually(t, 3*time.Second, "a VM booting the new image", func() bool {
		for _, r := range h.m.VMs() {
			if r.Image == want {
				return true
			}
		}
		return false
	})

	pinned := moved
	pinned.VM.Image = "registry.example/ci/runner@sha256:unreachable"
	roots.mu.Lock()
	roots.reloadErr = errors.New("pull registry.example/ci/runner: connection refused")
	roots.mu.Unlock()
	_, err := h.m.Reload(t.Context(), []config.Pool{pinned}, forges)
	if err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("a reload whose image cannot be pulled: %v, want it refused with the pull's error", err)
	}
	if got := h.poolConfig().VM.Image; got != moved.VM.Image {
		t.Fatalf("the refused reload changed the pool's image to %q", got)
	}
}
