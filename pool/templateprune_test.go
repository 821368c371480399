package pool

import (
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// warmPool is the rig's pool's template state, once its first build ran.
func (r *warmRig) warmPool(t *testing.T) *warmPool {
	t.Helper()
	r.m.mu.Lock()
	defer r.m.mu.Unlock()
	w := r.m.warm["p"]
	if w == nil {
		t.Fatal("the pool has no template state")
	}
	return w
}

// TestAnOldBuildIsRemovedOutsideTheVMsStart: the last restore of a
// build a rebuild replaced ends; the removal of that build (its state
// and memory file, GiBs with QEMU) does not run in the VM's start: the
// VM's start returns while the removal is held, and the old build is
// removed once the removal goes on.
func TestAnOldBuildIsRemovedOutsideTheVMsStart(t *testing.T) {
	// Build 2's prune has run: the build counter comes after it.
	r, first, endRestore := swappedUnderARestore(t)

	// From here, a prune is held until let is closed.
	holding, let := make(chan struct{}), make(chan struct{})
	endHold := sync.OnceFunc(func() { close(let) })
	defer endHold()
	var held atomic.Bool
	w := r.warmPool(t)
	w.mu.Lock()
	w.beforePrune = func() {
		if held.CompareAndSwap(false, true) {
			close(holding)
		}
		<-let
	}
	w.mu.Unlock()

	endRestore() // the last restore of build 1 ends: build 1 goes
	select {
	case <-holding:
	case <-time.After(10 * time.Second):
		t.Fatalf("no removal of the old build began:\n%s", r.log.String())
	}
	// The VM's start returned (it logs "vm booting" after its restore's
	// handover, finishRestore),
	// the removal held.
	eventually(t, 10*time.Second, "the restored VM's start returned", func() bool {
		return strings.Contains(r.log.String(), `msg="vm booting"`) && strings.Contains(r.log.String(), "restored=true")
	})
	if _, err := os.Stat(first); err != nil {
		t.Fatalf("the old build went while its removal was held: %v", err)
	}
	endHold()
	eventually(t, 5*time.Second, "the old build removed once its removal goes on", func() bool {
		_, err := os.Stat(first)
		return os.IsNotExist(err)
	})
	if err := r.drain(t, time.Second); err != nil {
		t.Fatal(err)
	}
	r.assertNothingLeft(t)
}
