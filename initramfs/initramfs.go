// Package initramfs builds the initramfs each fireactions microVM boots
// from, on the host, without external tools.
//
// Linux unpacks an initramfs made of several cpio archives laid end to end,
// each compressed or not, later entries replacing earlier ones. So the
// expensive part is built once per pool (WritePool): the user's root
// archive, copied as is, then a gzip-compressed archive with the agent as
// /init and its kernel modules. Each VM's initramfs (WriteVM) is a copy of
// that plus a small uncompressed archive holding only the VM's agent
// config, which carries the runner's credential.
package initramfs

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
)

// Boot is what every VM of a pool boots with.
type Boot struct {
	// RootArchive is the user's root filesystem as a cpio archive
	// (compressed or not; its bytes are copied, never read). Empty: none.
	RootArchive string
	// Agent is the static fireactions-agent binary, installed as /init.
	Agent string
	// Modules are the kernel modules the agent loads (ResolveModules).
	Modules []Module
}

// WritePool writes the pool's boot archive to dst (mode 0644, replaced
// atomically): the root archive, then the agent's gzip-compressed overlay,
// zero-padded to a multiple of 4 bytes so that an uncompressed archive can
// follow (the kernel only looks for one at 4-byte-aligned offsets).
func (b Boot) WritePool(dst string) error {
	return writeAtomic(dst, 0o644, func(f *os.File) error {
		if b.RootArchive != "" {
			if err := appendFile(f, b.RootArchive); err != nil {
				return fmt.Errorf("copying root archive: %w", err)
			}
		}
		bw := bufio.NewWriterSize(f, 1<<20)
		zw, err := gzip.NewWriterLevel(bw, gzip.BestCompression)
		if err != nil {
			return err
		}
		if err := b.writeOverlay(zw); err != nil {
			return err
		}
		if err := zw.Close(); err != nil {
			return fmt.Errorf("compressing agent archive: %w", err)
		}
		if err := bw.Flush(); err != nil {
			return err
		}
		return padTo4(f)
	})
}

// writeOverlay writes the agent's archive: /init, the modules, the config
// directory, and the directories the agent mounts on or the runner expects.
func (b Boot) writeOverlay(out io.Writer) error {
	w := NewWriter(out)
	dirs := []struct {
		name string
		perm fs.FileMode
	}{
		{"/dev", 0o755}, {"/etc", 0o755}, {"/etc/fireactions", 0o700}, {ModulesDir, 0o700},
		{"/home", 0o755}, {"/proc", 0o555}, {"/root", 0o700}, {"/run", 0o755},
		{"/sys", 0o555}, {"/tmp", fs.ModeSticky | 0o777},
	}
	for _, d := range dirs {
		if err := w.MkdirAll(d.name, d.perm, 0, 0); err != nil {
			return err
		}
	}
	// The kernel gives /init the console as stdin/out/err only if
	// /dev/console exists before devtmpfs is mounted.
	if err := w.CharDevice("/dev/console", 0o600, 0, 0, 5, 1); err != nil {
		return err
	}
	if err := w.CopyFile("/init", 0o755, 0, 0, b.Agent); err != nil {
		return fmt.Errorf("adding the agent: %w", err)
	}
	for _, m := range b.Modules {
		if filepath.Dir(m.GuestPath) != ModulesDir {
			return fmt.Errorf("module %s: guest path %s is not in %s", m.Name, m.GuestPath, ModulesDir)
		}
		if err := w.CopyFile(m.GuestPath, 0o644, 0, 0, m.HostPath); err != nil {
			return fmt.Errorf("adding kernel module %s: %w", m.Name, err)
		}
	}
	return w.Close()
}

// WriteVM writes one VM's initramfs to dst (mode 0600, replaced
// atomically): a copy of the pool archive, then an uncompressed archive
// holding only the VM's config at agentproto.ConfigPath (0600, root).
func WriteVM(dst, poolArchive string, cfg agentproto.Config) error {
	data, err := json.Marshal(cfg)
	if err != nil {
		return fmt.Errorf("encoding agent config: %w", err)
	}
	var archive bytes.Buffer
	w := NewWriter(&archive)
	if err := w.File(agentproto.ConfigPath, 0o600, 0, 0, data); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	clear(data)
	defer clear(archive.Bytes())
	return writeAtomic(dst, 0o600, func(f *os.File) error {
		if err := appendFile(f, poolArchive); err != nil {
			return fmt.Errorf("copying pool archive: %w", err)
		}
		// A pool archive from WritePool is aligned already; any other
		// needs zeros before the uncompressed archive.
		if err := padTo4(f); err != nil {
			return err
		}
		_, err := f.Write(archive.Bytes())
		return err
	})
}

// appendFile copies the file src to the end of f. File to file, io.Copy
// lets the kernel copy (copy_file_range) without passing through memory.
func appendFile(f *os.File, src string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	_, err = io.Copy(f, in)
	return err
}

// padTo4 writes zeros to make f's size a multiple of 4.
func padTo4(f *os.File) error {
	off, err := f.Seek(0, io.SeekCurrent)
	if err != nil {
		return err
	}
	if n := (4 - off%4) % 4; n > 0 {
		_, err = f.Write(make([]byte, n))
	}
	return err
}

// writeAtomic writes dst through a temporary file in its directory, then
// renames it into place with mode perm, so that a reader never sees a
// partial file. It does not fsync: the file is consumed by a VM started
// right away, and a host crash loses that VM too.
func writeAtomic(dst string, perm fs.FileMode, write func(*os.File) error) (err error) {
	f, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".*.tmp")
	if err != nil {
		return fmt.Errorf("writing %s: %w", dst, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
			err = fmt.Errorf("writing %s: %w", dst, err)
		}
	}()
	if err := write(f); err != nil {
		return err
	}
	if err := f.Chmod(perm); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), dst)
}
