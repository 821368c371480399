package vmstate

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// lockFile is the file in the state directory an open Store holds an
// exclusive lock on: two orchestrators appending to one log would
// interleave their entries and each replay the other's VMs as its own.
const lockFile = "lock"

// ErrInUse is Open's error for a state directory another open Store
// (another orchestrator, or this one twice) holds.
var ErrInUse = errors.New("vm state: directory in use by another orchestrator")

// lockWait bounds lockDir's wait for a lock another process holds. The
// processes an orchestrator starts hold its descriptors from their fork
// until their exec: one killed as it started a VM leaves its lock held
// by that child for an instant after its own end, longer on a loaded
// host (seen: a restart right after a SIGKILL refused).
const lockWait = 2 * time.Second

// lockDir takes dir's lock, waiting at most lockWait for another holder
// to let it go: the lock is released when the returned file is closed,
// or when the process ends however it ends.
func lockDir(dir string) (*os.File, error) {
	path := filepath.Join(dir, lockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("vm state: lock %s: %w", path, err)
	}
	deadline := time.Now().Add(lockWait)
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("vm state: lock %s: %w", path, err)
		}
		if time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("%w: %s is locked (is another fireactions running with state_dir %s?)", ErrInUse, path, filepath.Dir(dir))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
