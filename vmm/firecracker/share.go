package firecracker

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"golang.org/x/sys/unix"
)

// snapshotShare is how a jail is given a template's snapshot files; its
// zero value asks the file system. Tests set its fields to play a file
// system without ACLs or with little room.
type snapshotShare struct {
	// grant, when set, replaces the ACL grant letting group gid read
	// path (unix.EOPNOTSUPP: a file system without ACLs).
	grant func(path string, gid int) error
	// drop, when set, replaces the removal from path's ACL of the
	// entries of the groups drop reports.
	drop func(path string, drop func(gid int) bool) error
	// free, when set, replaces the free space (statfs) of dir's file
	// system, in bytes.
	free func(dir string) (uint64, error)
	// copy, when set, replaces copying src to dst (copyFile).
	copy func(src, dst string) error

	// mu guards copying: the bytes of the copies under way, which the
	// file system does not count as used yet.
	mu      sync.Mutex
	copying uint64
}

// grantRead lets group gid read path: by the ACL entry locks takes.
func (s *snapshotShare) grantRead(ctx context.Context, locks *aclLocks, path string, gid int) error {
	if s.grant != nil {
		return s.grant(path, gid)
	}
	return locks.changeGroupRead(ctx, path, gid, true)
}

// dropRead removes the entries of the groups drop reports from path's
// ACL: by the ACL edit locks takes.
func (s *snapshotShare) dropRead(ctx context.Context, locks *aclLocks, path string, drop func(gid int) bool) error {
	if s.drop != nil {
		return s.drop(path, drop)
	}
	return locks.dropGroups(ctx, path, drop)
}

// freeSpace is the space an unprivileged user may still use on dir's file
// system, in bytes.
func (s *snapshotShare) freeSpace(dir string) (uint64, error) {
	if s.free != nil {
		return s.free(dir)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return availableBytes(&st), nil
}

// availableBytes is the space statfs reports an unprivileged user may
// still use: available blocks of the fundamental block size.
func availableBytes(st *unix.Statfs_t) uint64 {
	return st.Bavail * uint64(st.Frsize)
}

// copyFile copies src to dst, a new file of mode 0600.
func (s *snapshotShare) copyFile(src, dst string) error {
	if s.copy != nil {
		return s.copy(src, dst)
	}
	return copyFile(src, dst, 0o600)
}

// reserve counts size bytes of a copy of src into dir against the free
// space of dir's file system, with the copies already under way, until
// release: once a copy is on disk (or failed) statfs counts it. A copy
// there is no room for, with margin to spare, is refused. warn, when
// set, is logged first, with the sizes.
func (s *snapshotShare) reserve(jl *jail, src, dir string, size, margin uint64, warn string) (release func(), err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	free, err := s.freeSpace(dir)
	if err != nil {
		return nil, fmt.Errorf("free space on the file system of %s for a copy of %s: %w", dir, src, err)
	}
	if warn != "" {
		jl.log.Warn(warn, "file", src, "bytes", size, "free_bytes", free, "copying_bytes", s.copying)
	}
	if free < s.copying || free-s.copying < size+margin {
		return nil, fmt.Errorf("no room on the file system of %s for a copy of %s (%d bytes): %d bytes free, %d of them being copied, %d kept free",
			dir, src, size, free, s.copying, margin)
	}
	s.copying += size
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.copying -= size
	}, nil
}

// copyMargin is the free space a snapshot file's copy into a jail (each
// restore's, as large as the guest's memory) leaves on its file system,
// beyond the copy; bootCopyMargin a boot file's (a kernel, an
// initramfs: a copy on every boot where they cannot be linked, as from a
// read-only /nix/store on another file system, which must not need a
// gigabyte spare).
const (
	copyMargin     = 1 << 30
	bootCopyMargin = 16 << 20
)

// copySnapshot gives the jail a copy of the template's snapshot file src
// at dst, its user's, where it cannot share it (why). Every restore then
// copies the template's memory: the log says so, with the size, and a
// copy its file system has no room for is refused (see copyIn: the
// restore fails, its VM boots cold) rather than filling the disk.
func (jl *jail) copySnapshot(src, dst, why string) error {
	return jl.copyIn(src, dst, copyMargin, "firecracker: each restore gets a copy of the template's snapshot file: "+why)
}

// copyIn gives the jail a copy of src at dst, its user's, mode 0600,
// when dst's file system has room for it with margin to spare,
// counting the copies under way (reserve; warn is logged first, when
// set); else it fails, naming the file and the file system.
func (jl *jail) copyIn(src, dst string, margin uint64, warn string) error {
	st, err := os.Stat(src)
	if err != nil {
		return err
	}
	share := &jl.j.share
	release, err := share.reserve(jl, src, filepath.Dir(dst), uint64(st.Size()), margin, warn)
	if err != nil {
		return err
	}
	defer release()
	if err := share.copyFile(src, dst); err != nil {
		_ = os.Remove(dst)
		return err
	}
	return os.Chown(dst, jl.uid, jl.gid)
}
