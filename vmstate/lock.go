package vmstate

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// lockFile is the file in the state directory an open Store holds an
// exclusive lock on: two orchestrators appending to one log would
// interleave their entries and each replay the other's VMs as its own.
const lockFile = "lock"

// ErrInUse is Open's error for a state directory another open Store
// (another orchestrator, or this one twice) holds.
var ErrInUse = errors.New("vm state: directory in use by another orchestrator")

// lockDir takes dir's lock, without waiting: the lock is released when
// the returned file is closed, or when the process ends however it ends.
func lockDir(dir string) (*os.File, error) {
	path := filepath.Join(dir, lockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("vm state: lock %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s is locked (is another fireactions running with state_dir %s?)", ErrInUse, path, filepath.Dir(dir))
		}
		return nil, fmt.Errorf("vm state: lock %s: %w", path, err)
	}
	return f, nil
}
