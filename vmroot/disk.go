package vmroot

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// Disks makes the VMs' writable disks. Formatting a disk costs tens of
// milliseconds and more with its size, so each size is formatted once, as
// a sparse template, and every VM gets a clone: a reflink where the file
// system has them, else a copy of the template's few allocated blocks
// (about 2 MiB whatever the size). The guest sees an empty ext4 file
// system of the pool's disk_mib.
type Disks struct {
	dir string
	mu  sync.Mutex // serialises template creation
}

// NewDisks keeps its templates in dir.
func NewDisks(dir string) (*Disks, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("vmroot: %w", err)
	}
	return &Disks{dir: dir}, nil
}

// Template returns the formatted template of a disk of mib MiB, making it
// if needed (atomically: a crash leaves no half-formatted template).
func (d *Disks) Template(ctx context.Context, mib int) (string, error) {
	if mib < 64 {
		return "", fmt.Errorf("vmroot: writable disk of %d MiB: at least 64", mib)
	}
	p := filepath.Join(d.dir, "ext4-"+strconv.Itoa(mib)+"m.img")
	if _, err := os.Stat(p); err == nil {
		return p, nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, err := os.Stat(p); err == nil {
		return p, nil
	}
	tmp, err := os.CreateTemp(d.dir, ".template-*")
	if err != nil {
		return "", fmt.Errorf("vmroot: %w", err)
	}
	tmp.Close()
	defer os.Remove(tmp.Name())
	// No journal (the disk dies with its VM), lazily initialised inode
	// tables (the guest mounts it with noinit_itable), no reserved blocks.
	out, err := exec.CommandContext(ctx, "mkfs.ext4", "-q", "-F", "-t", "ext4", "-b", "4096", "-m", "0",
		"-O", "^has_journal", "-E", "lazy_itable_init=1,nodiscard", "-L", "fa-writable",
		tmp.Name(), strconv.Itoa(mib)+"M").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("vmroot: format a %d MiB disk: %w: %s", mib, err, strings.TrimSpace(string(out)))
	}
	if err := os.Rename(tmp.Name(), p); err != nil {
		return "", fmt.Errorf("vmroot: %w", err)
	}
	return p, nil
}

// Create makes dst a fresh writable disk of mib MiB.
func (d *Disks) Create(ctx context.Context, mib int, dst string) error {
	tpl, err := d.Template(ctx, mib)
	if err != nil {
		return err
	}
	if err := cloneSparse(tpl, dst); err != nil {
		os.Remove(dst)
		return fmt.Errorf("vmroot: writable disk %s: %w", dst, err)
	}
	return nil
}

// cloneSparse copies src to the new file dst: a reflink (FICLONE) when the
// file system can, else only src's data extents, leaving its holes holes.
func cloneSparse(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer out.Close()
	if unix.IoctlFileClone(int(out.Fd()), int(in.Fd())) == nil {
		return nil
	}
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	size := fi.Size()
	if err := out.Truncate(size); err != nil {
		return err
	}
	for off := int64(0); off < size; {
		data, err := unix.Seek(int(in.Fd()), off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // only a hole is left
		}
		if err != nil {
			return fmt.Errorf("seek data: %w", err)
		}
		hole, err := unix.Seek(int(in.Fd()), data, unix.SEEK_HOLE)
		if err != nil {
			return fmt.Errorf("seek hole: %w", err)
		}
		if err := copyRange(in, out, data, hole-data); err != nil {
			return err
		}
		off = hole
	}
	return out.Close()
}

// copyRange copies n bytes at off from in to the same offset of out, in
// the kernel when it can.
func copyRange(in, out *os.File, off, n int64) error {
	roff, woff := off, off
	for n > 0 {
		c, err := unix.CopyFileRange(int(in.Fd()), &roff, int(out.Fd()), &woff, int(n), 0)
		if err != nil {
			// Across file systems or unsupported: through user space.
			_, err = io.Copy(io.NewOffsetWriter(out, woff), io.NewSectionReader(in, roff, n))
			return err
		}
		if c == 0 {
			return io.ErrUnexpectedEOF
		}
		n -= int64(c)
	}
	return nil
}
