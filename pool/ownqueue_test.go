package pool

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/config"
	"github.com/nixos-fireactions/nixos-fireactions/forge"
)

// ownQueueForge is the notifying fake forge whose queue is its pool's
// alone, as a GitHub scale set's is (forge.OwnQueue).
type ownQueueForge struct{ *notifyingForge }

func (ownQueueForge) OwnQueue() bool { return true }

// vmsOf counts the manager's VMs by pool name.
func vmsOf(m *Manager) map[string]int {
	n := map[string]int{}
	for _, r := range m.VMs() {
		n[r.Pool]++
	}
	return n
}

// Two scale-set pools on one forge and scope, the first offering every
// label of the second: the jobs the second's driver tells start the
// second's VMs, not the first's, and full passes, which read the first's
// (empty) queue, keep them queued for the second.
func TestOwnQueuePoolsKeepTheirDemand(t *testing.T) {
	var a *notifyingForge
	h := newHarnessEvery(t, 20*time.Millisecond, filepath.Join(t.TempDir(), "vms"), 0, 2, guestHangs,
		func(pc *config.Pool) { pc.Timeouts.Boot = time.Hour; pc.Labels = []string{"linux", "x"} },
		slog.New(slog.NewTextHandler(io.Discard, nil)), nil,
		func(f *fakeForge) forge.Forge { a = &notifyingForge{fakeForge: f}; return ownQueueForge{a} })
	b := &notifyingForge{fakeForge: newFakeForge()}
	pa := h.m.poolList()[0].cfg
	pb := pa
	pb.Name, pb.Labels = "b", []string{"linux"}
	if _, err := h.m.Reload(context.Background(), []config.Pool{pa, pb},
		map[string]forge.Forge{"p": h.m.poolList()[0].forge, "b": ownQueueForge{b}}); err != nil {
		t.Fatal(err)
	}
	b.enqueue("j1", "j2")
	b.tell("j1", true)
	b.tell("j2", true)
	eventually(t, 5*time.Second, "two VMs in all", func() bool {
		n := vmsOf(h.m)
		return n["p"]+n["b"] == 2
	})
	if n := vmsOf(h.m); n["b"] != 2 || n["p"] != 0 {
		t.Fatalf("VMs by pool %v: b's told jobs went to p", n)
	}
	before := a.reads.Load()
	eventually(t, 5*time.Second, "three full passes", func() bool { return a.reads.Load() >= before+3 })
	h.m.mu.Lock()
	var queued int
	for _, p := range h.m.pools {
		if p.cfg.Name == "b" {
			queued = p.queued
		}
	}
	h.m.mu.Unlock()
	if queued != 2 {
		t.Fatalf("pool b has %d queued jobs after full passes, want 2", queued)
	}
	if n := vmsOf(h.m); n["b"] != 2 || n["p"] != 0 {
		t.Fatalf("VMs by pool after full passes %v, want b 2", n)
	}
}

// A pool whose queue is its own takes every job of its key, whatever
// its labels; another pool of the forge and scope takes none of them.
func TestOwnQueuePoolTakesItsJobsWhateverTheirLabels(t *testing.T) {
	own := poolView{name: "b", forge: "f||b", labels: []string{"linux"}, own: true}
	shared := poolView{name: "a", forge: "f|", labels: []string{"gpu", "linux"}}
	j := forge.Job{ID: "1", Labels: []string{"gpu"}}
	if !own.serves("f||b", j) {
		t.Fatal("the own-queue pool does not take a job of its queue")
	}
	if shared.serves("f||b", j) || own.serves("f|", j) {
		t.Fatal("a job crossed between the own queue and the shared one")
	}
}
