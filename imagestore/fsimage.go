package imagestore

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// treeStats describe a flattened tree, for sizing an ext4 image and for
// the image's record.
type treeStats struct {
	entries      int
	inodes       int   // distinct inodes (hard links once)
	dataBlocks   int64 // 4 KiB blocks of file data, hard links once
	dirs         int
	longSymlinks int // targets that do not fit in the inode
	contentBytes int64
}

// buildFS packs the tree dir into a read-only file system image at dst.
// The child process inherits hold, the pull's lock on its temporary
// directory, so a packer that outlives a crashed orchestrator keeps the
// directory from being cleaned up under it, and it is killed when the
// thread that started it dies.
func buildFS(ctx context.Context, fsType, dir, dst string, st treeStats, hold *os.File) error {
	var cmd *exec.Cmd
	switch fsType {
	case FSErofs:
		cmd = exec.CommandContext(ctx, "mkfs.erofs", "--quiet", dst, dir)
	case FSExt4:
		if err := os.WriteFile(dst, nil, 0o600); err != nil {
			return err
		}
		cmd = exec.CommandContext(ctx, "mkfs.ext4", "-q", "-F", "-t", "ext4", "-d", dir,
			"-b", "4096", "-I", "256", "-N", strconv.Itoa(st.inodes+256), "-m", "0",
			"-O", "^has_journal,^resize_inode", "-E", "lazy_itable_init=1,nodiscard",
			"-L", "fa-image", dst, strconv.FormatInt(ext4SizeKiB(st), 10))
	default:
		return fmt.Errorf("unknown file system type %q", fsType)
	}
	if hold != nil {
		cmd.ExtraFiles = []*os.File{hold}
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.CombinedOutput()
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("%s: %w: %s", cmd.Args[0], err, strings.TrimSpace(string(out)))
	}
	return nil
}

// ext4SizeKiB is an ext4 size that holds the tree: its data and directory
// blocks, inode tables, and a margin for extent blocks, bitmaps and group
// descriptors. The image file is sparse, so the margin costs nothing.
func ext4SizeKiB(st treeStats) int64 {
	blocks := st.dataBlocks + int64(st.dirs) + int64(st.longSymlinks)
	bytes := blocks*4096 + int64(st.inodes+256)*256
	bytes += bytes/8 + 32<<20
	return bytes / 1024
}

// walkTree indexes the flattened tree and measures it. The index is what
// the host reads to look into the image without mounting it (the runner
// agent's path).
func walkTree(dir string, w io.Writer) (treeStats, error) {
	var st treeStats
	ix := newIndexWriter(w)
	seen := map[[2]uint64]bool{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		var s unix.Stat_t
		if err := unix.Lstat(p, &s); err != nil {
			return err
		}
		e := IndexEntry{Path: "/" + filepath.ToSlash(rel), Mode: s.Mode, UID: s.Uid, GID: s.Gid, Size: s.Size}
		if rel == "." {
			e.Path = "/"
		}
		st.entries++
		key := [2]uint64{s.Dev, s.Ino}
		first := !seen[key]
		seen[key] = true
		if first {
			st.inodes++
		}
		switch s.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			st.dirs++
		case unix.S_IFLNK:
			t, err := os.Readlink(p)
			if err != nil {
				return err
			}
			e.Link = t
			if len(t) > 59 {
				st.longSymlinks++
			}
		case unix.S_IFREG:
			if first {
				st.dataBlocks += (s.Size + 4095) / 4096
				st.contentBytes += s.Size
			}
		}
		return ix.add(e)
	})
	if err != nil {
		return st, err
	}
	return st, ix.close()
}

// readInRoot reads the file p of the tree dir, resolving symlinks within
// the tree; "" when it is missing or too large for a user database.
func readInRoot(dir, p string) string {
	root, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return ""
	}
	defer unix.Close(root)
	fd, err := unix.Openat2(root, p, &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return ""
	}
	f := os.NewFile(uintptr(fd), p)
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 4<<20))
	if err != nil {
		return ""
	}
	return string(b)
}

// allocated is the disk the files under dir take (allocated blocks, so a
// sparse image counts for what it holds).
func allocated(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		var s unix.Stat_t
		if err == nil && unix.Lstat(p, &s) == nil {
			n += s.Blocks * 512
		}
		return nil
	})
	return n
}
