package agent

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
	"golang.org/x/sys/unix"
)

// defaultFileMode is used for a runner file whose mode is 0: a file nobody
// may read is never what the host meant.
const defaultFileMode = 0o600

// writeRunnerFiles writes the runner's files, owned by its user, creating
// missing parent directories owned by that user too. Then, written or
// not, it zeroes and drops their content in r.Files, which is the
// config's (the slice is shared): the agent, PID 1, keeps the config for
// the VM's life and needs only the files' paths after this. That
// shortens what the agent holds of the runner's credential; it is no
// secrecy from root in the guest, which can read the files, the runner's
// memory, and whatever copies the decoding left in the agent's.
func (a *Agent) writeRunnerFiles(r agentproto.Runner, docker bool) error {
	defer forgetFileContents(r.Files)
	n := 0
	for _, f := range r.Files {
		if f.IfDocker != nil && *f.IfDocker != docker {
			continue // the configuration for a guest with(out) dockerd
		}
		n++
		guest := path.Clean(f.Path)
		if err := a.mkdirOwned(path.Dir(guest), 0o755, r.UID, r.GID); err != nil {
			return fmt.Errorf("writing runner file %s: %w", guest, err)
		}
		mode := f.Mode & 0o7777
		if mode == 0 {
			mode = defaultFileMode
		}
		if err := a.writeOwnedFile(guest, f.Content, mode, r.UID, r.GID); err != nil {
			return fmt.Errorf("writing runner file %s: %w", guest, err)
		}
	}
	if n > 0 {
		a.logf("wrote %d runner files", n)
	}
	return nil
}

// forgetFileContents zeroes each file's content and drops it.
func forgetFileContents(files []agentproto.File) {
	for i := range files {
		clear(files[i].Content)
		files[i].Content = nil
	}
}

// writeOwnedFile replaces the guest file with content, owned by uid:gid
// with exactly mode (chown first: it clears set-id bits).
func (a *Agent) writeOwnedFile(guest string, content []byte, mode uint32, uid, gid int) error {
	p := filepath.Join(a.Root, guest)
	if err := replaceFile(p, content, 0o600); err != nil {
		return err
	}
	if err := a.Sys.Chown(p, uid, gid); err != nil {
		return fmt.Errorf("chown %d:%d: %w", uid, gid, err)
	}
	if err := unix.Chmod(p, mode); err != nil {
		return fmt.Errorf("chmod %o: %w", mode, err)
	}
	return nil
}

// mkdirOwned creates the guest directory and its missing parents with mode
// perm, owned by uid:gid. Directories that already exist are left alone.
func (a *Agent) mkdirOwned(guest string, perm uint32, uid, gid int) error {
	guest = path.Clean(guest)
	if guest == "/" {
		return nil
	}
	p := filepath.Join(a.Root, guest)
	fi, err := os.Lstat(p)
	if err == nil {
		if !fi.IsDir() {
			return fmt.Errorf("%s exists and is not a directory", guest)
		}
		return nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := a.mkdirOwned(path.Dir(guest), perm, uid, gid); err != nil {
		return err
	}
	if err := os.Mkdir(p, 0o700); err != nil {
		return fmt.Errorf("creating %s: %w", guest, err)
	}
	return a.own(p, perm, uid, gid)
}

// own sets a path's owner, then its exact mode (umask does not apply).
func (a *Agent) own(p string, perm uint32, uid, gid int) error {
	if err := a.Sys.Chown(p, uid, gid); err != nil {
		return fmt.Errorf("chown %d:%d %s: %w", uid, gid, p, err)
	}
	if err := unix.Chmod(p, perm); err != nil {
		return fmt.Errorf("chmod %o %s: %w", perm, p, err)
	}
	return nil
}

// replaceFile removes whatever is at p (a file or a symlink; never follows
// it) and creates a new file there with content and exactly mode perm.
func replaceFile(p string, content []byte, perm uint32) error {
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(content)
	if err == nil {
		err = unix.Fchmod(int(f.Fd()), perm)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// removeReadFiles removes the runner's files marked RemoveWhenReady: the
// runner has read them by the time it prints its ready line.
func (a *Agent) removeReadFiles(r agentproto.Runner) {
	n := 0
	for _, f := range r.Files {
		if !f.RemoveWhenReady {
			continue
		}
		if err := os.Remove(filepath.Join(a.Root, f.Path)); err != nil && !errors.Is(err, os.ErrNotExist) {
			a.logf("removing %s once the runner read it: %v", f.Path, err)
			continue
		}
		n++
	}
	if n > 0 {
		a.logf("removed %d runner files the runner has read", n)
	}
}
