// Package guestroot builds a minimal guest root file system as a cpio
// archive: busybox, a static bash and a forge's runner agent, with the
// store paths (a Nix closure) a dynamically linked runner needs. It is the
// root for hosts without an OCI image store (nix/packages/guest-root.nix
// builds one per forge), and what the demo and the end-to-end tests boot.
package guestroot

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path"
	"sort"
	"strings"

	"github.com/nixos-fireactions/nixos-fireactions/initramfs"
)

// Spec says what goes into the root.
type Spec struct {
	Busybox string // a static busybox (Debian: /bin/busybox from busybox-static)
	Bash    string // a static bash (Debian: /bin/bash-static); empty: none
	// Files are extra host files placed in the guest: guest path -> host path.
	Files map[string]string
	// Closure are host paths (Nix store paths) copied whole into the guest
	// under the same paths, symlinks kept as they are.
	Closure []string
	// Links are symlinks placed in the guest: guest path -> absolute
	// target, which must lie in one of the Closure paths.
	Links map[string]string
}

// DefaultSpec is the Debian packages' layout with the runner at
// runnerGuestPath.
func DefaultSpec(runnerHostPath, runnerGuestPath string) Spec {
	return Spec{
		Busybox: "/bin/busybox",
		Bash:    "/bin/bash-static",
		Files:   map[string]string{runnerGuestPath: runnerHostPath},
	}
}

// Build writes the root archive, gzip-compressed, to dst.
func Build(ctx context.Context, s Spec, dst string) error {
	roots, err := closureRoots(s.Closure)
	if err != nil {
		return fmt.Errorf("guest root: %w", err)
	}
	for guest, target := range s.Links {
		if !path.IsAbs(guest) || !inClosure(target, roots) {
			return fmt.Errorf("guest root: link %s -> %s: the target is not in the closure (%s)", guest, target, strings.Join(roots, " "))
		}
		if _, err := os.Stat(target); err != nil {
			return fmt.Errorf("guest root: link %s -> %s: %w", guest, target, err)
		}
	}
	s.Closure = roots
	applets, err := busyboxApplets(ctx, s.Busybox)
	if err != nil {
		return err
	}
	tmp := dst + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("guest root: %w", err)
	}
	defer os.Remove(tmp)
	defer f.Close()
	bw := bufio.NewWriterSize(f, 1<<20)
	zw := gzip.NewWriter(bw)
	w := initramfs.NewWriter(zw)
	if err := write(w, s, applets); err != nil {
		return fmt.Errorf("guest root: %w", err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("guest root: %w", err)
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("guest root: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("guest root: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("guest root: %w", err)
	}
	return os.Rename(tmp, dst)
}

func write(w *initramfs.Writer, s Spec, applets []string) error {
	for _, d := range []string{"/bin", "/etc", "/home", "/root", "/tmp", "/var/tmp", "/usr"} {
		perm := os.FileMode(0o755)
		if strings.HasSuffix(d, "tmp") {
			perm = 0o1777
		}
		if err := w.MkdirAll(d, perm, 0, 0); err != nil {
			return err
		}
	}
	// One bin directory: scripts find tools wherever they look.
	for _, l := range []string{"/sbin", "/usr/bin", "/usr/sbin"} {
		if err := w.Symlink(l, "/bin", 0, 0); err != nil {
			return err
		}
	}
	if err := w.CopyFile("/bin/busybox", 0o755, 0, 0, s.Busybox); err != nil {
		return err
	}
	for _, a := range applets {
		if a == "busybox" || (a == "bash" && s.Bash != "") {
			continue
		}
		if err := w.Symlink("/bin/"+a, "busybox", 0, 0); err != nil {
			return err
		}
	}
	if s.Bash != "" {
		if err := w.CopyFile("/bin/bash", 0o755, 0, 0, s.Bash); err != nil {
			return err
		}
	}
	if err := w.File("/etc/passwd", 0o644, 0, 0, []byte("root:x:0:0:root:/root:/bin/sh\n")); err != nil {
		return err
	}
	if err := w.File("/etc/group", 0o644, 0, 0, []byte("root:x:0:\n")); err != nil {
		return err
	}
	for _, guest := range sortedKeys(s.Files) {
		host := s.Files[guest]
		if err := w.MkdirAll(path.Dir(guest), 0o755, 0, 0); err != nil {
			return err
		}
		if err := w.CopyFile(guest, 0o755, 0, 0, host); err != nil {
			return err
		}
	}
	if err := writeClosure(w, s.Closure); err != nil {
		return err
	}
	for _, guest := range sortedKeys(s.Links) {
		if err := w.MkdirAll(path.Dir(guest), 0o755, 0, 0); err != nil {
			return err
		}
		if err := w.Symlink(guest, s.Links[guest], 0, 0); err != nil {
			return err
		}
	}
	return nil
}

// sortedKeys are m's keys in order: equal specs give equal archives.
func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// busyboxApplets asks busybox which applets it has.
func busyboxApplets(ctx context.Context, busybox string) ([]string, error) {
	out, err := exec.CommandContext(ctx, busybox, "--list").Output()
	if err != nil {
		return nil, fmt.Errorf("guest root: list busybox applets of %s: %w", busybox, err)
	}
	var applets []string
	for _, line := range bytes.Split(out, []byte("\n")) {
		if a := strings.TrimSpace(string(line)); a != "" && !strings.Contains(a, "/") {
			applets = append(applets, a)
		}
	}
	if len(applets) == 0 {
		return nil, fmt.Errorf("guest root: %s lists no applets", busybox)
	}
	return applets, nil
}
