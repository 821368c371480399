package guestroot

import (
	"bufio"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/nixos-fireactions/nixos-fireactions/initramfs"
)

// ReadClosure reads a file of store paths, one absolute path a line, as
// nixpkgs' closureInfo writes its store-paths. Blank lines are skipped; a
// relative or unclean path is an error naming the file and line.
func ReadClosure(file string) ([]string, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("closure: %w", err)
	}
	defer f.Close()
	var paths []string
	s := bufio.NewScanner(f)
	for n := 1; s.Scan(); n++ {
		p := strings.TrimSpace(s.Text())
		if p == "" {
			continue
		}
		if !path.IsAbs(p) || path.Clean(p) != p || p == "/" {
			return nil, fmt.Errorf("closure %s:%d: %q is not an absolute, clean path below /", file, n, p)
		}
		paths = append(paths, p)
	}
	if err := s.Err(); err != nil {
		return nil, fmt.Errorf("closure %s: %w", file, err)
	}
	return paths, nil
}

// closureRoots sorts and de-duplicates paths, and checks each exists on
// the host.
func closureRoots(paths []string) ([]string, error) {
	seen := map[string]bool{}
	var out []string
	for _, p := range paths {
		if seen[p] {
			continue
		}
		seen[p] = true
		if _, err := os.Lstat(p); err != nil {
			return nil, fmt.Errorf("closure path %s: %w", p, err)
		}
		out = append(out, p)
	}
	sort.Strings(out)
	return out, nil
}

// inClosure says whether target lies in (or is) one of the closure paths.
func inClosure(target string, roots []string) bool {
	for _, r := range roots {
		if target == r || strings.HasPrefix(target, r+"/") {
			return true
		}
	}
	return false
}

// writeClosure copies each closure path into the archive under the same
// path: directories and files with their permission bits, symlinks with
// their targets unchanged, all owned by root. Parents of a closure path
// (/nix/store) are 0755 directories.
func writeClosure(w *initramfs.Writer, roots []string) error {
	for _, r := range roots {
		if parent := path.Dir(r); parent != "/" {
			if err := w.MkdirAll(parent, 0o755, 0, 0); err != nil {
				return err
			}
		}
		err := filepath.WalkDir(r, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return fmt.Errorf("closure path %s: %w", r, err)
			}
			info, err := d.Info()
			if err != nil {
				return fmt.Errorf("closure path %s: %w", r, err)
			}
			perm := info.Mode().Perm()
			switch {
			case d.IsDir():
				return w.Dir(p, perm, 0, 0)
			case info.Mode().IsRegular():
				return w.CopyFile(p, perm, 0, 0, p)
			case info.Mode()&fs.ModeSymlink != 0:
				target, err := os.Readlink(p)
				if err != nil {
					return fmt.Errorf("closure path %s: %w", r, err)
				}
				return w.Symlink(p, target, 0, 0)
			default:
				return fmt.Errorf("closure path %s: %s is a %s, not a file, directory or symlink", r, p, info.Mode().Type())
			}
		})
		if err != nil {
			return err
		}
	}
	return nil
}
