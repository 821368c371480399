package agent

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
)

func TestWriteRunnerFiles(t *testing.T) {
	root := t.TempDir()
	sys := newFakeSys(t, root)
	a := &Agent{Root: root, Sys: sys}
	// An existing symlink must be replaced, not followed.
	outside := filepath.Join(t.TempDir(), "victim")
	must(t, os.WriteFile(outside, []byte("keep"), 0o644))
	must(t, os.MkdirAll(filepath.Join(root, "opt"), 0o755))
	must(t, os.Symlink(outside, filepath.Join(root, "opt/link")))

	r := agentproto.Runner{UID: 1001, GID: 1002, Files: []agentproto.File{
		{Path: "/opt/a/b/secret", Mode: 0o600, Content: []byte("s")},
		{Path: "/opt/tool", Mode: 0o4755, Content: []byte("#!/bin/sh\n")},
		{Path: "/opt/nomode", Content: []byte("n")},
		{Path: "/opt/link", Mode: 0o644, Content: []byte("new")},
		{Path: "/opt/empty", Mode: 0o640},
	}}
	if err := a.writeRunnerFiles(r, false); err != nil {
		t.Fatal(err)
	}
	owner := [2]int{1001, 1002}
	for p, mode := range map[string]os.FileMode{
		"/opt/a":          os.ModeDir | 0o755,
		"/opt/a/b":        os.ModeDir | 0o755,
		"/opt/a/b/secret": 0o600,
		"/opt/tool":       os.ModeSetuid | 0o755,
		"/opt/nomode":     0o600,
		"/opt/link":       0o644,
		"/opt/empty":      0o640,
	} {
		fi, err := os.Lstat(filepath.Join(root, p))
		if err != nil {
			t.Errorf("%s: %v", p, err)
			continue
		}
		if fi.Mode() != mode {
			t.Errorf("%s mode %v, want %v", p, fi.Mode(), mode)
		}
		if got, _ := sys.owner(p); got != owner {
			t.Errorf("%s owner %v", p, got)
		}
	}
	if _, set := sys.owner("/opt"); set {
		t.Error("an existing parent changed owner")
	}
	if got := readFile(t, outside); got != "keep" {
		t.Errorf("followed a symlink: target now %q", got)
	}
	if got := readFile(t, filepath.Join(root, "opt/link")); got != "new" {
		t.Errorf("/opt/link %q", got)
	}
}
