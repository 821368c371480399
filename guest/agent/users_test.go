package agent

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
)

func TestAppendEntry(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		name, before, after string
		missing, appended   bool
	}{
		{"absent", "root:x:0:0::/root:/bin/sh\n", "root:x:0:0::/root:/bin/sh\nci:x:1:1\n", false, true},
		{"no final newline", "root:x:0:0::/root:/bin/sh", "root:x:0:0::/root:/bin/sh\nci:x:1:1\n", false, true},
		{"present", "root:x:0:0::/root:/bin/sh\nci:x:5:5::/h:/bin/bash\n", "root:x:0:0::/root:/bin/sh\nci:x:5:5::/h:/bin/bash\n", false, false},
		{"prefix is not a match", "ci2:x:2:2\nc:x:3:3\n", "ci2:x:2:2\nc:x:3:3\nci:x:1:1\n", false, true},
		{"missing file", "", "seed:x:0:0\nci:x:1:1\n", true, true},
	} {
		p := filepath.Join(dir, c.name)
		if !c.missing {
			must(t, os.WriteFile(p, []byte(c.before), 0o600))
		}
		appended, err := appendEntry(p, "ci", "ci:x:1:1\n", "seed:x:0:0\n")
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		got := readFile(t, p)
		if got != c.after || appended != c.appended {
			t.Errorf("%s: got %q (appended %v), want %q (%v)", c.name, got, appended, c.after, c.appended)
		}
		if fi, _ := os.Stat(p); c.appended && fi.Mode() != 0o644 {
			t.Errorf("%s: mode %v", c.name, fi.Mode())
		}
	}
}

func TestEnsureUserKeepsAnExistingUserAndCreatesDirectories(t *testing.T) {
	root := t.TempDir()
	must(t, os.MkdirAll(filepath.Join(root, "etc"), 0o755))
	passwd := "root:x:0:0::/root:/bin/sh\nrunner:x:1001:1002::/home/runner:/bin/bash\n"
	must(t, os.WriteFile(filepath.Join(root, "etc/passwd"), []byte(passwd), 0o644))
	sys := newFakeSys(t, root)
	a := &Agent{Root: root, Sys: sys}
	r := agentproto.Runner{User: "runner", UID: 1001, GID: 1002, Home: "/home/runner", WorkDir: "/srv/work/runner"}
	if err := a.ensureUser(r); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(root, "etc/passwd")); got != passwd {
		t.Errorf("passwd rewritten: %q", got)
	}
	if got := readFile(t, filepath.Join(root, "etc/group")); got != "root:x:0:\nrunner:x:1002:\n" {
		t.Errorf("group %q", got)
	}
	for p, want := range map[string][2]int{
		"/home": {0, 0}, "/home/runner": {1001, 1002},
		"/srv": {0, 0}, "/srv/work": {0, 0}, "/srv/work/runner": {1001, 1002},
	} {
		if got, ok := sys.owner(p); !ok || got != want {
			t.Errorf("%s owner %v (%v), want %v", p, got, ok, want)
		}
	}
	// An existing home gets the runner's ownership and mode 0700.
	must(t, os.Chmod(filepath.Join(root, "home/runner"), 0o755))
	sys.owners = map[string][2]int{}
	if err := a.ensureUser(r); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(filepath.Join(root, "home/runner")); fi.Mode().Perm() != 0o700 {
		t.Errorf("home mode %v", fi.Mode())
	}
	if got, _ := sys.owner("/home/runner"); got != [2]int{1001, 1002} {
		t.Errorf("home owner %v", got)
	}
}

func TestIsWithin(t *testing.T) {
	for _, c := range []struct {
		p, dir string
		want   bool
	}{
		{"/home/runner", "/home/runner", true},
		{"/home/runner/work", "/home/runner", true},
		{"/home/runner2", "/home/runner", false},
		{"/home", "/home/runner", false},
	} {
		if got := isWithin(c.p, c.dir); got != c.want {
			t.Errorf("isWithin(%q, %q) = %v", c.p, c.dir, got)
		}
	}
}
