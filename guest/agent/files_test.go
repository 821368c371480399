package agent

import (
	"os"
	"path/filepath"
	"strings"
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

// TestTheAgentKeepsNoRunnerFileContentOnceWritten: the runner's files
// (its credential among them) are on disk for the runner; the config the
// agent keeps for the VM's life holds none of their content afterwards,
// written or skipped (a file for a guest with dockerd in one without),
// and the bytes it held are zeroed, not just dropped. The files stay
// named: the runner's ready line removes some of them.
func TestTheAgentKeepsNoRunnerFileContentOnceWritten(t *testing.T) {
	root := t.TempDir()
	a := &Agent{Root: root, Sys: newFakeSys(t, root)}
	yes := true
	r := agentproto.Runner{UID: 1001, GID: 1002, Files: []agentproto.File{
		{Path: "/home/runner/.runner", Mode: 0o600, Content: []byte("runner-secret"), RemoveWhenReady: true},
		{Path: "/home/runner/docker.yaml", Content: []byte("docker-secret"), IfDocker: &yes},
	}}
	held := [][]byte{r.Files[0].Content, r.Files[1].Content}

	if err := a.writeRunnerFiles(r, false); err != nil {
		t.Fatal(err)
	}

	if got := readFile(t, filepath.Join(root, "home/runner/.runner")); got != "runner-secret" {
		t.Fatalf("the runner's file holds %q", got)
	}
	for i, f := range r.Files {
		if f.Content != nil {
			t.Errorf("%s: the config keeps its content %q", f.Path, f.Content)
		}
		if strings.Trim(string(held[i]), "\x00") != "" {
			t.Errorf("%s: the bytes the config held are left: %q", f.Path, held[i])
		}
	}
	if r.Files[0].Path != "/home/runner/.runner" || !r.Files[0].RemoveWhenReady {
		t.Errorf("the file's name or removal went with its content: %+v", r.Files[0])
	}
}
