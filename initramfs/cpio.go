package initramfs

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path"
	"strings"
)

// newc ("SVR4 with no CRC") format: a 110-byte ASCII header of the magic
// and 13 hex fields, the NUL-terminated name, padding to 4 bytes, the data,
// padding to 4 bytes. The kernel's initramfs unpacker reads this format.
const (
	newcMagic      = "070701"
	newcHeaderSize = 110
	trailerName    = "TRAILER!!!"
)

// File type bits of a newc mode (the kernel's S_IF* values).
const (
	modeDir     = 0o040000
	modeRegular = 0o100000
	modeSymlink = 0o120000
	modeCharDev = 0o020000
)

// Writer writes a newc cpio archive. Every entry has mtime 0 and an inode
// number unique in the archive, so equal inputs give equal archives.
// Entries are written in the order added; MkdirAll emits missing parents
// first. Writer does not buffer: give it a buffered writer.
type Writer struct {
	w    io.Writer
	off  int64
	ino  uint32
	dirs map[string]bool // directories emitted in this archive
	err  error
}

// NewWriter returns a Writer that writes an archive to w.
func NewWriter(w io.Writer) *Writer {
	return &Writer{w: w, dirs: map[string]bool{}}
}

// Dir adds a directory.
func (w *Writer) Dir(name string, perm fs.FileMode, uid, gid int) error {
	n, err := archiveName(name)
	if err != nil {
		return err
	}
	if err := w.header(n, modeDir|permBits(perm), uid, gid, 2, 0, 0, 0); err != nil {
		return err
	}
	w.dirs[n] = true
	return nil
}

// MkdirAll adds the directory name and those of its parents not yet added
// to this archive, parents first, all with perm, uid and gid.
func (w *Writer) MkdirAll(name string, perm fs.FileMode, uid, gid int) error {
	n, err := archiveName(name)
	if err != nil {
		return err
	}
	if w.dirs[n] {
		return nil
	}
	if parent := path.Dir(n); parent != "." {
		if err := w.MkdirAll(parent, perm, uid, gid); err != nil {
			return err
		}
	}
	return w.Dir(n, perm, uid, gid)
}

// File adds a regular file holding data.
func (w *Writer) File(name string, perm fs.FileMode, uid, gid int, data []byte) error {
	n, err := archiveName(name)
	if err != nil {
		return err
	}
	if err := w.header(n, modeRegular|permBits(perm), uid, gid, 1, int64(len(data)), 0, 0); err != nil {
		return err
	}
	return w.body(data)
}

// CopyFile adds a regular file with the content of the host file src,
// streamed rather than read into memory.
func (w *Writer) CopyFile(name string, perm fs.FileMode, uid, gid int, src string) error {
	n, err := archiveName(name)
	if err != nil {
		return err
	}
	f, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("adding %s: %w", name, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("adding %s: %w", name, err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("adding %s: %s is not a regular file", name, src)
	}
	if err := w.header(n, modeRegular|permBits(perm), uid, gid, 1, fi.Size(), 0, 0); err != nil {
		return err
	}
	m, err := io.CopyN(w.w, f, fi.Size())
	w.off += m
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = fmt.Errorf("%s shrank while being copied", src)
		}
		w.err = fmt.Errorf("adding %s: %w", name, err)
		return w.err
	}
	return w.pad()
}

// Symlink adds a symbolic link to target.
func (w *Writer) Symlink(name, target string, uid, gid int) error {
	n, err := archiveName(name)
	if err != nil {
		return err
	}
	if target == "" {
		return fmt.Errorf("symlink %s: empty target", name)
	}
	if err := w.header(n, modeSymlink|0o777, uid, gid, 1, int64(len(target)), 0, 0); err != nil {
		return err
	}
	return w.body([]byte(target))
}

// CharDevice adds a character device node, such as /dev/console (5, 1).
func (w *Writer) CharDevice(name string, perm fs.FileMode, uid, gid int, major, minor uint32) error {
	n, err := archiveName(name)
	if err != nil {
		return err
	}
	return w.header(n, modeCharDev|permBits(perm), uid, gid, 1, 0, major, minor)
}

// Close writes the trailer. It does not close the underlying writer.
func (w *Writer) Close() error {
	return w.header(trailerName, 0, 0, 0, 1, 0, 0, 0)
}

// header writes one entry's header and name, padded.
func (w *Writer) header(name string, mode uint32, uid, gid int, nlink uint32, size int64, rmajor, rminor uint32) error {
	if w.err != nil {
		return w.err
	}
	if size > math.MaxUint32 || uid < 0 || gid < 0 || uint64(uid) > math.MaxUint32 || uint64(gid) > math.MaxUint32 {
		return fmt.Errorf("adding %s: size or owner out of range for newc", name)
	}
	ino := uint32(0)
	if name != trailerName {
		w.ino++
		ino = w.ino
	}
	h := fmt.Sprintf("%s%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		newcMagic, ino, mode, uid, gid, nlink, 0 /* mtime */, size,
		0, 0, rmajor, rminor, len(name)+1, 0 /* check */)
	if err := w.write([]byte(h + name + "\x00")); err != nil {
		return fmt.Errorf("adding %s: %w", name, err)
	}
	return w.pad()
}

func (w *Writer) body(data []byte) error {
	if err := w.write(data); err != nil {
		return err
	}
	return w.pad()
}

// pad writes zeros up to the next multiple of 4.
func (w *Writer) pad() error {
	if n := (4 - w.off%4) % 4; n > 0 {
		return w.write(make([]byte, n))
	}
	return nil
}

func (w *Writer) write(b []byte) error {
	if w.err != nil {
		return w.err
	}
	n, err := w.w.Write(b)
	w.off += int64(n)
	if err != nil {
		w.err = fmt.Errorf("writing cpio archive: %w", err)
	}
	return w.err
}

// archiveName is name as newc archives spell it: relative, clean.
func archiveName(name string) (string, error) {
	n := path.Clean("/" + name)[1:]
	if n == "" || n == trailerName || strings.ContainsRune(n, 0) {
		return "", fmt.Errorf("invalid archive entry name %q", name)
	}
	return n, nil
}

// permBits is perm as the low 12 bits of a Unix mode. Set-id and sticky
// bits may be given either as Go's fs.ModeSetuid etc. or as the Unix octal
// 0o4000, 0o2000, 0o1000 (os.FileMode(0o1777)), which Go's FileMode leaves
// unused.
func permBits(perm fs.FileMode) uint32 {
	m := uint32(perm & 0o7777)
	if perm&fs.ModeSetuid != 0 {
		m |= 0o4000
	}
	if perm&fs.ModeSetgid != 0 {
		m |= 0o2000
	}
	if perm&fs.ModeSticky != 0 {
		m |= 0o1000
	}
	return m
}
