package guestroot

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// fakeStore makes two store paths in a temporary directory: a runner
// (an executable, a relative symlink, nested directories with a
// read-only file) and a library (an absolute symlink to its file). It
// returns the store directory and the closure file listing both (with a
// duplicate and a blank line, as a file may have).
func fakeStore(t *testing.T) (store, closure string) {
	t.Helper()
	store = filepath.Join(t.TempDir(), "store")
	runner := filepath.Join(store, "aaaa-runner")
	lib := filepath.Join(store, "bbbb-lib")
	for _, d := range []string{runner + "/bin", runner + "/share/doc/deep", lib + "/lib"} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	must(t, os.WriteFile(runner+"/bin/runner", []byte("#!/bin/sh\necho runner\n"), 0o555))
	must(t, os.WriteFile(runner+"/share/doc/deep/README", []byte("nested\n"), 0o444))
	must(t, os.Symlink("runner", runner+"/bin/act_runner"))
	must(t, os.WriteFile(lib+"/lib/libfoo.so.1.0", []byte("ELF?"), 0o444))
	must(t, os.Symlink(lib+"/lib/libfoo.so.1.0", lib+"/lib/libfoo.so.1"))
	closure = filepath.Join(t.TempDir(), "store-paths")
	must(t, os.WriteFile(closure, []byte(lib+"\n"+runner+"\n\n"+lib+"\n"), 0o644))
	return store, closure
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// extract unpacks a gzip cpio archive with Debian's cpio into a new
// directory: an independent reader of what Build wrote.
func extract(t *testing.T, archive string) string {
	t.Helper()
	if _, err := exec.LookPath("cpio"); err != nil {
		t.Fatal("cpio is not installed: `make deps` installs it")
	}
	dir := t.TempDir()
	cmd := exec.Command("sh", "-c", "gzip -dc "+archive+" | cpio -idm --quiet")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("unpacking %s: %v\n%s", archive, err, out)
	}
	return dir
}

func busybox(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat("/bin/busybox"); err != nil {
		t.Fatal("no /bin/busybox: `make deps` installs busybox-static")
	}
	return "/bin/busybox"
}

// A closure is copied whole under its own paths: nested directories,
// permission bits (the executable bit), symlinks with their targets as
// they were; the runner is a symlink into it.
func TestBuildWithClosure(t *testing.T) {
	store, closure := fakeStore(t)
	paths, err := ReadClosure(closure)
	if err != nil {
		t.Fatal(err)
	}
	runner := filepath.Join(store, "aaaa-runner", "bin", "runner")
	out := filepath.Join(t.TempDir(), "root.cpio.gz")
	s := Spec{Busybox: busybox(t), Closure: paths, Links: map[string]string{"/bin/act_runner": runner}}
	must(t, Build(context.Background(), s, out))
	dir := extract(t, out)
	in := func(p string) string { return filepath.Join(dir, p) }

	for p, want := range map[string]os.FileMode{
		store + "/aaaa-runner/bin/runner":            0o555,
		store + "/aaaa-runner/share/doc/deep/README": 0o444,
		store + "/bbbb-lib/lib/libfoo.so.1.0":        0o444,
		store + "/aaaa-runner/share/doc/deep":        0o755 | os.ModeDir,
		store + "/aaaa-runner/share":                 0o755 | os.ModeDir,
	} {
		fi, err := os.Lstat(in(p))
		if err != nil {
			t.Errorf("%s is not in the archive: %v", p, err)
			continue
		}
		if fi.Mode() != want {
			t.Errorf("%s: mode %v, want %v", p, fi.Mode(), want)
		}
	}
	if b, _ := os.ReadFile(in(store + "/aaaa-runner/share/doc/deep/README")); string(b) != "nested\n" {
		t.Errorf("nested file holds %q", b)
	}
	for link, want := range map[string]string{
		store + "/aaaa-runner/bin/act_runner": "runner",
		store + "/bbbb-lib/lib/libfoo.so.1":   store + "/bbbb-lib/lib/libfoo.so.1.0",
		"/bin/act_runner":                     runner,
	} {
		got, err := os.Readlink(in(link))
		if err != nil || got != want {
			t.Errorf("%s: symlink to %q (%v), want %q", link, got, err, want)
		}
	}
	if fi, err := os.Lstat(in("/bin/busybox")); err != nil || fi.Mode() != 0o755 {
		t.Errorf("/bin/busybox: %v %v", fi, err)
	}
	// The same inputs give the same archive.
	again := filepath.Join(t.TempDir(), "again.cpio.gz")
	must(t, Build(context.Background(), s, again))
	a, _ := os.ReadFile(out)
	b, _ := os.ReadFile(again)
	if string(a) != string(b) {
		t.Error("two builds of the same spec differ")
	}
}

// A store path the closure lists that does not exist is named.
func TestBuildClosureMissingPath(t *testing.T) {
	store, _ := fakeStore(t)
	missing := filepath.Join(store, "cccc-gone")
	s := Spec{Busybox: busybox(t), Closure: []string{filepath.Join(store, "aaaa-runner"), missing}}
	err := Build(context.Background(), s, filepath.Join(t.TempDir(), "root.cpio.gz"))
	if err == nil || !strings.Contains(err.Error(), "closure path "+missing) {
		t.Fatalf("a missing closure path: %v", err)
	}
}

// A runner link outside the closure, or to nothing, is refused.
func TestBuildRunnerLinkChecked(t *testing.T) {
	store, closure := fakeStore(t)
	paths, _ := ReadClosure(closure)
	for target, want := range map[string]string{
		"/usr/bin/env": "is not in the closure",
		filepath.Join(store, "aaaa-runner", "bin", "nope"): "no such file",
	} {
		s := Spec{Busybox: busybox(t), Closure: paths, Links: map[string]string{"/bin/act_runner": target}}
		err := Build(context.Background(), s, filepath.Join(t.TempDir(), "root.cpio.gz"))
		if err == nil || !strings.Contains(err.Error(), target) || !strings.Contains(err.Error(), want) {
			t.Errorf("link to %s: %v, want an error with %q", target, err, want)
		}
	}
}

// A closure file with a relative or unclean path is refused, naming the
// file and the line.
func TestReadClosureRejectsBadLines(t *testing.T) {
	for _, line := range []string{"nix/store/aaaa-x", "/nix/store/../etc", "/"} {
		f := filepath.Join(t.TempDir(), "store-paths")
		must(t, os.WriteFile(f, []byte("/nix/store/bbbb-y\n"+line+"\n"), 0o644))
		_, err := ReadClosure(f)
		if err == nil || !strings.Contains(err.Error(), f+":2:") {
			t.Errorf("%q: %v", line, err)
		}
	}
	if _, err := ReadClosure(filepath.Join(t.TempDir(), "absent")); err == nil {
		t.Error("an absent closure file was read")
	}
}
