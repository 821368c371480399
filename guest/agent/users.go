package agent

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
)

// runnerShell is the login shell recorded for the runner's user.
const runnerShell = "/bin/sh"

// ensureUser adds the runner's user and group to /etc/passwd and /etc/group
// unless an entry of that name exists, and creates its home (0700) and work
// directory, owned by it.
func (a *Agent) ensureUser(r agentproto.Runner) error {
	passwd := fmt.Sprintf("%s:x:%d:%d:fireactions runner:%s:%s\n", r.User, r.UID, r.GID, r.Home, runnerShell)
	added, err := appendEntry(filepath.Join(a.Root, "etc/passwd"), r.User, passwd, "root:x:0:0:root:/root:"+runnerShell+"\n")
	if err != nil {
		return fmt.Errorf("adding user %s to /etc/passwd: %w", r.User, err)
	}
	if _, err := appendEntry(filepath.Join(a.Root, "etc/group"), r.User, fmt.Sprintf("%s:x:%d:\n", r.User, r.GID), "root:x:0:\n"); err != nil {
		return fmt.Errorf("adding group %s to /etc/group: %w", r.User, err)
	}
	if added {
		a.logf("added user %s (%d:%d)", r.User, r.UID, r.GID)
	}
	if err := a.ownedDir(r.Home, 0o700, r); err != nil {
		return fmt.Errorf("creating home of %s: %w", r.User, err)
	}
	if path.Clean(r.WorkDir) != path.Clean(r.Home) {
		if err := a.ownedDir(r.WorkDir, 0o755, r); err != nil {
			return fmt.Errorf("creating work directory of %s: %w", r.User, err)
		}
	}
	return nil
}

// ownedDir makes the guest directory exist, owned by the runner with mode
// perm even if it existed. Missing parents outside the runner's home are
// root's.
func (a *Agent) ownedDir(dir string, perm uint32, r agentproto.Runner) error {
	parent := path.Dir(path.Clean(dir))
	if isWithin(parent, r.Home) {
		if err := a.mkdirOwned(parent, 0o755, r.UID, r.GID); err != nil {
			return err
		}
	} else if err := a.mkdirOwned(parent, 0o755, 0, 0); err != nil {
		return err
	}
	if err := a.mkdirOwned(dir, perm, r.UID, r.GID); err != nil {
		return err
	}
	return a.own(filepath.Join(a.Root, dir), perm, r.UID, r.GID)
}

// isWithin says whether guest path p is dir or below it.
func isWithin(p, dir string) bool {
	p, dir = path.Clean(p), path.Clean(dir)
	return p == dir || len(p) > len(dir) && p[:len(dir)] == dir && p[len(dir)] == '/'
}

// appendEntry appends line to the colon-separated database file unless an
// entry named name is there. A missing file is created with seed first.
// It reports whether it appended.
func appendEntry(file, name, line, seed string) (bool, error) {
	b, err := os.ReadFile(file)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, err
	}
	if err != nil {
		b = []byte(seed)
	}
	if hasEntry(b, name) {
		return false, nil
	}
	if len(b) > 0 && b[len(b)-1] != '\n' {
		b = append(b, '\n')
	}
	b = append(b, line...)
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return false, err
	}
	// Rewritten whole, not appended: a seed or a missing final newline may
	// need writing too. Mode 0644 as for every passwd and group file.
	if err := replaceFile(file, b, 0o644); err != nil {
		return false, err
	}
	return true, nil
}

// hasEntry says whether the passwd- or group-format content has a line
// whose first field is name.
func hasEntry(content []byte, name string) bool {
	s := bufio.NewScanner(bytes.NewReader(content))
	s.Buffer(nil, 1<<20)
	for s.Scan() {
		field, _, _ := bytes.Cut(s.Bytes(), []byte(":"))
		if string(field) == name {
			return true
		}
	}
	return false
}
