package firecracker

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Two restores' jail groups let read one file: taking one's entry back
// leaves the other's; the last taken back, the file is its owner's
// again (no bit for group or others). A symbolic link in its place (a
// jail's user names what its root holds) is refused, its target's ACL
// untouched.
func TestSnapshotACLEntriesAreEachJailsOwn(t *testing.T) {
	f := filepath.Join(t.TempDir(), "snapshot.mem")
	if err := os.WriteFile(f, []byte("memory"), 0o600); err != nil {
		t.Fatal(err)
	}
	var acls aclLocks
	for _, gid := range []int{64201, 64202} {
		if err := acls.changeGroupRead(context.Background(), f, gid, true); err != nil {
			t.Fatal(err)
		}
	}
	can := func(gid int) bool {
		ok, err := groupCanRead(f, gid)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	if !can(64201) || !can(64202) || can(64203) {
		t.Fatalf("after two grants: %v %v %v", can(64201), can(64202), can(64203))
	}
	if st, _ := os.Stat(f); st.Mode().Perm()&0o007 != 0 {
		t.Fatalf("others may read: %v", st.Mode())
	}
	if err := acls.changeGroupRead(context.Background(), f, 64201, false); err != nil {
		t.Fatal(err)
	}
	if can(64201) || !can(64202) {
		t.Fatalf("after one taken back: %v %v", can(64201), can(64202))
	}
	link := filepath.Join(filepath.Dir(f), "link")
	if err := os.Symlink(f, link); err != nil {
		t.Fatal(err)
	}
	if err := acls.changeGroupRead(context.Background(), link, 64202, false); err == nil || !can(64202) {
		t.Fatalf("through a symbolic link: %v; the target's entry kept: %v", err, can(64202))
	}
	if err := acls.changeGroupRead(context.Background(), f, 64202, false); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(f); can(64202) || st.Mode().Perm() != 0o600 {
		t.Fatalf("after the last taken back: %v, %v", can(64202), st.Mode())
	}
}

// A jailed Firecracker may open a snapshot file it is let read and
// flock it: granting and revoking entries on that file go on all the
// same (the orchestrator's lock is its own, not the file's).
func TestAFlockOnASnapshotFileDoesNotBlockItsACLChanges(t *testing.T) {
	f := filepath.Join(t.TempDir(), "snapshot.mem")
	if err := os.WriteFile(f, []byte("memory"), 0o600); err != nil {
		t.Fatal(err)
	}
	var acls aclLocks
	holder, err := os.Open(f)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	if err := unix.Flock(int(holder.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	// The positive control: another open file description cannot take it.
	probe, err := os.Open(f)
	if err != nil {
		t.Fatal(err)
	}
	defer probe.Close()
	if err := unix.Flock(int(probe.Fd()), unix.LOCK_EX|unix.LOCK_NB); !errors.Is(err, unix.EWOULDBLOCK) {
		t.Fatalf("the flock is not held: a second one got %v", err)
	}
	done := make(chan error, 1)
	go func() {
		err := acls.changeGroupRead(context.Background(), f, 64201, true)
		if err == nil {
			err = acls.changeGroupRead(context.Background(), f, 64201, false)
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second): // a bound, so that a block fails, not hangs
		t.Fatal("granting an entry waits for a flock another process holds on the file")
	}
}

// Restores of one template starting at once each add their entry to its
// one ACL: none is lost to another's read-modify-write.
func TestConcurrentGrantsOnOneFileAllLand(t *testing.T) {
	f := filepath.Join(t.TempDir(), "snapshot.mem")
	if err := os.WriteFile(f, []byte("memory"), 0o600); err != nil {
		t.Fatal(err)
	}
	var acls aclLocks
	const n = 16
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- acls.changeGroupRead(context.Background(), f, 64300+i, true)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		if ok, err := groupCanRead(f, 64300+i); err != nil || !ok {
			t.Errorf("group %d's entry lost (%v)", 64300+i, err)
		}
	}
}

// A change waiting for another change of the same file's ACL waits no
// longer than its context; once every change is done, nothing is kept
// for the file.
func TestAnACLChangeWaitsForAnotherNoLongerThanItsContext(t *testing.T) {
	var acls aclLocks
	k := inode{dev: 1, ino: 2}
	unlock, err := acls.lock(context.Background(), k)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := acls.lock(ctx, k); !errors.Is(err, context.Canceled) {
		t.Fatalf("waiting on a held lock with a cancelled context: %v", err)
	}
	unlock()
	acls.mu.Lock()
	defer acls.mu.Unlock()
	if len(acls.held) != 0 {
		t.Fatalf("locks kept after every change: %v", acls.held)
	}
}
