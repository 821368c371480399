package agent

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// dockerDataDir is Docker's data directory. On an image root it is a
// directory of the VM's writable disk bind-mounted there: dockerd's
// overlay2 cannot stack its layers on the root's overlay (overlay on
// overlay), and the disk is the VM's own, so no other VM sees it.
const dockerDataDir = "/var/lib/docker"

// mountDockerData bind-mounts the writable disk's docker directory on
// /var/lib/docker of the new root (newRoot, the agent's view), creating
// what is missing. A /var/lib/docker (or a parent) that the image has as
// a symlink or a file is an error: it would point the mount elsewhere.
func (a *Agent) mountDockerData(newRoot string) error {
	src := a.path(writableMount + "/docker")
	if err := os.Mkdir(src, 0o710); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("mounting %s: %w", dockerDataDir, err)
	}
	target, err := plainDir(newRoot, dockerDataDir)
	if err != nil {
		return fmt.Errorf("mounting %s: %w", dockerDataDir, err)
	}
	if err := a.Sys.Mount(src, target, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("mounting %s on the VM's writable disk: %w", dockerDataDir, err)
	}
	return nil
}

// plainDir makes sure root/p is a directory reached through directories
// only, creating the missing ones, and returns its path.
func plainDir(root, p string) (string, error) {
	cur := root
	for _, part := range strings.Split(strings.Trim(p, "/"), "/") {
		cur = filepath.Join(cur, part)
		fi, err := os.Lstat(cur)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			if err := os.Mkdir(cur, 0o755); err != nil {
				return "", err
			}
		case err != nil:
			return "", err
		case !fi.IsDir():
			return "", fmt.Errorf("%s in the image is not a directory (%s): Docker's data cannot be mounted there",
				"/"+strings.TrimPrefix(strings.TrimPrefix(cur, root), "/"), fi.Mode().Type())
		}
	}
	return cur, nil
}
