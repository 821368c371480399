package imagestore

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// OCI layer whiteouts: ".wh.NAME" deletes NAME from the layers below;
// ".wh..wh..opq" in a directory hides everything the layers below put in
// it. Other ".wh..wh." names are aufs bookkeeping, ignored.
const (
	whiteoutPrefix = ".wh."
	whiteoutMeta   = ".wh..wh."
	opaqueMarker   = ".wh..wh..opq"
)

// applier writes image layers, lowest first, into a directory tree: the
// union a container runtime would show, as plain files a file system
// builder can pack. Every path is resolved beneath the tree's root
// (openat2 RESOLVE_IN_ROOT), so a layer's symlinks and ".." can never make
// it write outside the tree, even though it runs as root.
type applier struct {
	root int // O_PATH descriptor of the tree's root

	// The current layer's entries: exactly as named, and every directory
	// above them, so an opaque marker keeps what its own layer adds.
	created   map[string]bool
	ancestors map[string]bool
	opaque    []string

	// Directory times are set last: writing into a directory moves its
	// modification time.
	dirTimes map[string]time.Time
}

func newApplier(dir string) (*applier, error) {
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", dir, err)
	}
	return &applier{root: fd, dirTimes: map[string]time.Time{}}, nil
}

func (a *applier) close() { unix.Close(a.root) }

// applyLayer applies one uncompressed layer tar stream.
func (a *applier) applyLayer(ctx context.Context, r io.Reader) error {
	a.created, a.ancestors, a.opaque = map[string]bool{}, map[string]bool{}, nil
	tr := tar.NewReader(r)
	buf := make([]byte, 1<<20)
	for n := 0; ; n++ {
		if n%256 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("reading layer: %w", err)
		}
		if err := a.entry(hdr, tr, buf); err != nil {
			return fmt.Errorf("%s: %w", hdr.Name, err)
		}
	}
	return a.applyOpaque()
}

// cleanName turns a tar entry name into a path relative to the root ("" is
// the root itself); ok is false for names that climb out of it.
func cleanName(name string) (string, bool) {
	p := path.Clean("/" + name)
	if strings.Contains(name, "\x00") {
		return "", false
	}
	p = strings.TrimPrefix(p, "/")
	for _, c := range strings.Split(name, "/") {
		if c == ".." {
			return "", false
		}
	}
	return p, true
}

func (a *applier) entry(hdr *tar.Header, r io.Reader, buf []byte) error {
	name, ok := cleanName(hdr.Name)
	if !ok {
		return errors.New("path leaves the image root")
	}
	dir, base := path.Split(name)
	dir = strings.TrimSuffix(dir, "/")
	switch {
	case name == "":
		if hdr.Typeflag == tar.TypeDir {
			return a.setMeta(a.root, ".", hdr, false)
		}
		return nil
	case base == opaqueMarker:
		a.opaque = append(a.opaque, dir)
		a.mark(dir)
		return nil
	case strings.HasPrefix(base, whiteoutMeta):
		return nil
	case strings.HasPrefix(base, whiteoutPrefix):
		return a.whiteout(dir, strings.TrimPrefix(base, whiteoutPrefix))
	}
	parent, err := a.parent(dir)
	if err != nil {
		return err
	}
	defer unix.Close(parent)
	a.mark(name)
	return a.create(parent, name, base, hdr, r, buf)
}

// mark records that the current layer put p there.
func (a *applier) mark(p string) {
	a.created[p] = true
	for d := path.Dir(p); d != "." && d != "/" && !a.ancestors[d]; d = path.Dir(d) {
		a.ancestors[d] = true
	}
}

// create makes one entry in the parent directory, replacing what the
// layers below had there (a directory only by something that is not one).
func (a *applier) create(parent int, name, base string, hdr *tar.Header, r io.Reader, buf []byte) error {
	if hdr.Typeflag == tar.TypeLink {
		if t, ok := cleanName(hdr.Linkname); ok && t == name {
			return nil // a link to itself: the file is already there
		}
	}
	var st unix.Stat_t
	exists := unix.Fstatat(parent, base, &st, unix.AT_SYMLINK_NOFOLLOW) == nil
	isDir := exists && st.Mode&unix.S_IFMT == unix.S_IFDIR
	if exists && !(isDir && hdr.Typeflag == tar.TypeDir) {
		if err := removeAllAt(parent, base); err != nil {
			return err
		}
	}
	mode := uint32(hdr.Mode) & 0o7777
	switch hdr.Typeflag {
	case tar.TypeDir:
		if !isDir {
			if err := unix.Mkdirat(parent, base, 0o700); err != nil {
				return err
			}
		}
		a.dirTimes[name] = hdr.ModTime
		return a.setMeta(parent, base, hdr, true)
	case tar.TypeReg, tar.TypeRegA:
		fd, err := unix.Openat(parent, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err != nil {
			return err
		}
		f := os.NewFile(uintptr(fd), base)
		_, err = io.CopyBuffer(f, r, buf)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	case tar.TypeSymlink:
		if err := unix.Symlinkat(hdr.Linkname, parent, base); err != nil {
			return err
		}
	case tar.TypeLink:
		return a.hardlink(parent, base, hdr.Linkname)
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		kind := map[byte]uint32{tar.TypeChar: unix.S_IFCHR, tar.TypeBlock: unix.S_IFBLK, tar.TypeFifo: unix.S_IFIFO}[hdr.Typeflag]
		dev := unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor))
		if err := unix.Mknodat(parent, base, kind|mode, int(dev)); err != nil {
			return err
		}
	default:
		return nil // pax headers are consumed by the reader; other types (sockets) have no place in an image
	}
	return a.setMeta(parent, base, hdr, false)
}

// setMeta sets owner, mode (after the owner: chown clears set-id bits),
// extended attributes and times.
func (a *applier) setMeta(parent int, base string, hdr *tar.Header, isDir bool) error {
	if err := unix.Fchownat(parent, base, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("chown: %w", err)
	}
	if hdr.Typeflag == tar.TypeSymlink {
		return setTimes(parent, base, hdr.ModTime)
	}
	if err := unix.Fchmodat(parent, base, uint32(hdr.Mode)&0o7777, 0); err != nil {
		return fmt.Errorf("chmod: %w", err)
	}
	if err := setXattrs(parent, base, hdr); err != nil {
		return err
	}
	if isDir {
		return nil // set at the end
	}
	return setTimes(parent, base, hdr.ModTime)
}

func setTimes(parent int, base string, t time.Time) error {
	ts := unix.NsecToTimespec(t.UnixNano())
	if err := unix.UtimesNanoAt(parent, base, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("set times: %w", err)
	}
	return nil
}

// keepXattr says which extended attributes an image may carry into the
// guest: user attributes and file capabilities. SELinux labels belong to
// the host's policy, overlay attributes to the layer format.
func keepXattr(name string) bool {
	return strings.HasPrefix(name, "user.") || name == "security.capability"
}

func setXattrs(parent int, base string, hdr *tar.Header) error {
	const prefix = "SCHILY.xattr."
	var fd = -1
	defer func() {
		if fd >= 0 {
			unix.Close(fd)
		}
	}()
	for k, v := range hdr.PAXRecords {
		name, ok := strings.CutPrefix(k, prefix)
		if !ok || !keepXattr(name) {
			continue
		}
		if fd < 0 {
			var err error
			if fd, err = unix.Openat(parent, base, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK, 0); err != nil {
				return fmt.Errorf("xattr %s: %w", name, err)
			}
		}
		if err := unix.Fsetxattr(fd, name, []byte(v), 0); err != nil {
			return fmt.Errorf("xattr %s: %w", name, err)
		}
	}
	return nil
}

// hardlink links base in parent to target, a path in the tree (not
// following a final symlink: tar links name the link itself).
func (a *applier) hardlink(parent int, base, target string) error {
	t, ok := cleanName(target)
	if !ok || t == "" {
		return fmt.Errorf("hard link to %q leaves the image root", target)
	}
	tdir, tbase := path.Split(t)
	tparent, err := a.resolve(strings.TrimSuffix(tdir, "/"))
	if err != nil {
		return fmt.Errorf("hard link target %s: %w", target, err)
	}
	defer unix.Close(tparent)
	if err := unix.Linkat(tparent, tbase, parent, base, 0); err != nil {
		return fmt.Errorf("hard link to %s: %w", target, err)
	}
	return nil
}

// whiteout deletes dir/name, which the layers below made.
func (a *applier) whiteout(dir, name string) error {
	if name == "" || name == "." || name == ".." {
		return nil
	}
	parent, err := a.resolve(dir)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return err
	}
	defer unix.Close(parent)
	return removeAllAt(parent, name)
}

// applyOpaque empties the directories the layer marked opaque of what the
// layers below put there, keeping what this layer added. It runs after the
// layer, so the marker's place in the tar stream does not matter.
func (a *applier) applyOpaque() error {
	sort.Strings(a.opaque)
	for _, d := range a.opaque {
		fd, err := a.resolveDir(d, unix.O_RDONLY)
		if errors.Is(err, unix.ENOENT) {
			continue
		}
		if err != nil {
			return fmt.Errorf("opaque %s: %w", d, err)
		}
		err = a.prune(fd, d)
		unix.Close(fd)
		if err != nil {
			return fmt.Errorf("opaque %s: %w", d, err)
		}
	}
	return nil
}

// prune removes from the open directory dir every entry the current layer
// did not create, descending into those it kept.
func (a *applier) prune(fd int, dir string) error {
	names, err := readDirNames(fd)
	if err != nil {
		return err
	}
	for _, n := range names {
		p := path.Join(dir, n)
		if p == "." {
			p = n
		}
		switch {
		case a.ancestors[p]:
			sub, err := unix.Openat(fd, n, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			if err != nil {
				return err
			}
			err = a.prune(sub, p)
			unix.Close(sub)
			if err != nil {
				return err
			}
		case a.created[p]:
		default:
			if err := removeAllAt(fd, n); err != nil {
				return err
			}
		}
	}
	return nil
}

// finish sets the directories' times, deepest first.
func (a *applier) finish() error {
	dirs := make([]string, 0, len(a.dirTimes))
	for d := range a.dirTimes {
		dirs = append(dirs, d)
	}
	sort.Slice(dirs, func(i, j int) bool { return strings.Count(dirs[i], "/") > strings.Count(dirs[j], "/") })
	for _, d := range dirs {
		dir, base := path.Split(d)
		parent, err := a.resolve(strings.TrimSuffix(dir, "/"))
		if err != nil {
			continue // removed by a later layer
		}
		err = setTimes(parent, base, a.dirTimes[d])
		unix.Close(parent)
		if err != nil && !errors.Is(err, unix.ENOENT) {
			return err
		}
	}
	return nil
}

// resolve opens directory dir (relative to the root, "" for the root) as
// an O_PATH descriptor, resolving every component beneath the root.
func (a *applier) resolve(dir string) (int, error) {
	return a.resolveDir(dir, unix.O_PATH)
}

func (a *applier) resolveDir(dir string, flags int) (int, error) {
	if dir == "" {
		dir = "."
	}
	return unix.Openat2(a.root, dir, &unix.OpenHow{
		Flags:   uint64(flags | unix.O_DIRECTORY | unix.O_CLOEXEC),
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV,
	})
}

// parent opens directory dir, creating it and its missing parents (root's,
// 0755: what a runtime does for an entry whose directories a layer left
// out).
func (a *applier) parent(dir string) (int, error) {
	fd, err := a.resolve(dir)
	if !errors.Is(err, unix.ENOENT) {
		return fd, err
	}
	up, base := path.Split(dir)
	pfd, err := a.parent(strings.TrimSuffix(up, "/"))
	if err != nil {
		return -1, err
	}
	defer unix.Close(pfd)
	if err := unix.Mkdirat(pfd, base, 0o755); err != nil && !errors.Is(err, unix.EEXIST) {
		return -1, fmt.Errorf("create %s: %w", dir, err)
	}
	a.mark(dir)
	return a.resolve(dir)
}

// removeAllAt removes name in the directory dirfd and, for a directory,
// everything below it, never following a symlink.
func removeAllAt(dirfd int, name string) error {
	err := unix.Unlinkat(dirfd, name, 0)
	if err == nil || errors.Is(err, unix.ENOENT) {
		return nil
	}
	if !errors.Is(err, unix.EISDIR) && !errors.Is(err, unix.EPERM) {
		return fmt.Errorf("remove %s: %w", name, err)
	}
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("remove %s: %w", name, err)
	}
	names, err := readDirNames(fd)
	for _, n := range names {
		if err == nil {
			err = removeAllAt(fd, n)
		}
	}
	unix.Close(fd)
	if err != nil {
		return err
	}
	if err := unix.Unlinkat(dirfd, name, unix.AT_REMOVEDIR); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("remove %s: %w", name, err)
	}
	return nil
}

// readDirNames lists the open directory fd (without consuming fd).
func readDirNames(fd int) ([]string, error) {
	dup, err := unix.Openat(fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(dup), "dir")
	defer f.Close()
	return f.Readdirnames(-1)
}
