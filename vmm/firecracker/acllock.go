package firecracker

import (
	"context"
	"fmt"
	"sync"
)

// inode names a file across its hard links: its device and inode.
type inode struct{ dev, ino uint64 }

// aclLocks serialise the changes to each snapshot file's ACL (read,
// change, write back): restores of one template change its one ACL at
// once. The lock is the orchestrator's own, not the file's (a flock):
// a jailed Firecracker may open the file (its group is let read it) and
// flock it, which would stall every later restore's change. Only one
// orchestrator changes these ACLs (its state directory is locked). The
// zero value is ready to use.
type aclLocks struct {
	mu   sync.Mutex
	held map[inode]*inodeLock
}

// inodeLock is one inode's lock: a token in ch is the lock held; refs
// count its holder and waiters, the last of which removes it.
type inodeLock struct {
	ch   chan struct{}
	refs int
}

// lock takes the lock of file k, waiting no longer than ctx; unlock
// gives it back.
func (l *aclLocks) lock(ctx context.Context, k inode) (unlock func(), err error) {
	l.mu.Lock()
	if l.held == nil {
		l.held = map[inode]*inodeLock{}
	}
	e := l.held[k]
	if e == nil {
		e = &inodeLock{ch: make(chan struct{}, 1)}
		l.held[k] = e
	}
	e.refs++
	l.mu.Unlock()
	done := func() {
		l.mu.Lock()
		if e.refs--; e.refs == 0 {
			delete(l.held, k)
		}
		l.mu.Unlock()
	}
	select {
	case e.ch <- struct{}{}:
		return func() { <-e.ch; done() }, nil
	case <-ctx.Done():
		done()
		return nil, fmt.Errorf("wait for another change of the file's ACL: %w", ctx.Err())
	}
}
