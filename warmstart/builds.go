package warmstart

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
)

// A pool's template directory holds one directory per build, named by
// its generation (1, 2, …) and never changed once published, and
// CurrentLink, a symbolic link naming the published one. A build is
// made in a new generation's directory (NewBuild), sealed (Seal), then
// published by a new link renamed over the old (Publish): a crash
// before the rename leaves the old build current, after it the new one,
// and never a directory half of each. A restore takes every file (state,
// memory, initramfs) of one build it resolved once, so a rebuild
// meanwhile cannot pair one build's state with another's memory; Prune
// removes the builds no one names any more (the pool says which are in
// use) and a crash's leftovers.

// CurrentLink names the published build in a pool's template directory.
const CurrentLink = "current"

// Current is the directory of the build published in dir, or a
// Fallback: ReasonNoTemplate when none was, ReasonBadManifest when the
// link names no build of dir.
func Current(dir string) (string, error) {
	name, err := os.Readlink(filepath.Join(dir, CurrentLink))
	if errors.Is(err, fs.ErrNotExist) {
		return "", &Fallback{Reason: ReasonNoTemplate, Detail: "no template in " + dir}
	}
	if err != nil {
		return "", &Fallback{Reason: ReasonBadManifest, Detail: err.Error()}
	}
	if _, ok := generation(name); !ok {
		return "", &Fallback{Reason: ReasonBadManifest, Detail: fmt.Sprintf("%s names %q, not a build of %s", filepath.Join(dir, CurrentLink), name, dir)}
	}
	return filepath.Join(dir, name), nil
}

// generation is the number of a build directory's name; ok false for
// any other name.
func generation(name string) (uint64, bool) {
	n, err := strconv.ParseUint(name, 10, 64)
	return n, err == nil && n > 0 && strconv.FormatUint(n, 10) == name
}

// NewBuild makes the empty directory of dir's next build: a generation
// above every one dir holds, so never a directory a restore may still
// read.
func NewBuild(dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("warmstart: template directory: %w", err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "", fmt.Errorf("warmstart: template directory: %w", err)
	}
	var top uint64
	for _, e := range entries {
		if n, ok := generation(e.Name()); ok && n > top {
			top = n
		}
	}
	build := filepath.Join(dir, strconv.FormatUint(top+1, 10))
	if err := os.Mkdir(build, 0o700); err != nil {
		return "", fmt.Errorf("warmstart: new template build: %w", err)
	}
	return build, nil
}

// Publish makes build, a sealed directory NewBuild made, its pool
// directory's current template: build synced (Seal synced its files), a
// link to it made under a temporary name and renamed over CurrentLink,
// then the pool directory synced.
func Publish(build string) error {
	dir, name := filepath.Dir(build), filepath.Base(build)
	if _, ok := generation(name); !ok {
		return fmt.Errorf("warmstart: publish %s: not a template build", build)
	}
	if err := syncDir(build); err != nil {
		return fmt.Errorf("warmstart: publish %s: %w", build, err)
	}
	tmp := filepath.Join(dir, CurrentLink+".tmp")
	if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("warmstart: publish %s: %w", build, err)
	}
	if err := os.Symlink(name, tmp); err != nil {
		return fmt.Errorf("warmstart: publish %s: %w", build, err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, CurrentLink)); err != nil {
		return fmt.Errorf("warmstart: publish %s: %w", build, err)
	}
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("warmstart: publish %s: %w", build, err)
	}
	return nil
}

// syncDir syncs directory dir's entries.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Prune removes from the pool directory dir everything but CurrentLink,
// the build it names and the builds keep says to keep (given each
// build's path): older builds and what a crash left (a build never
// published, a temporary link, files of another layout). It returns the
// paths removed and the first error, having tried each.
func Prune(dir string, keep func(build string) bool) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("warmstart: prune %s: %w", dir, err)
	}
	current, _ := Current(dir)
	var removed []string
	var first error
	for _, e := range entries {
		path := filepath.Join(dir, e.Name())
		if e.Name() == CurrentLink || path == current {
			continue
		}
		if _, ok := generation(e.Name()); ok && keep(path) {
			continue
		}
		if err := os.RemoveAll(path); err != nil {
			if first == nil {
				first = fmt.Errorf("warmstart: prune %s: %w", dir, err)
			}
			continue
		}
		removed = append(removed, path)
	}
	return removed, first
}
