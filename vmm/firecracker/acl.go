package firecracker

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"slices"

	"golang.org/x/sys/unix"
)

// A template's snapshot files (its restores' state and memory) are
// shared by hard link among the jails of its restores, each jail its own
// uid and gid (see Jailer.IDs): they are root's, mode 0600, and each
// jail's group is let read them by a POSIX ACL entry (group:<gid>:r)
// added as the jail links them in and removed as the jail goes. No other
// user reads the template's memory (its pre-reseed RNG state among it),
// and the restores still share its pages. A file system without ACLs
// gets the jail a copy of its own instead, when it has room for it
// (share.go). The changes are serialised per file by a lock of the
// orchestrator's own (acllock.go), never a flock a jail could hold.

// aclXattr is the extended attribute the kernel keeps a file's access
// ACL in (linux/posix_acl_xattr.h).
const aclXattr = "system.posix_acl_access"

// The ACL's binary form: a version, then entries of tag, permissions and
// id, little-endian, in tag order (the kernel refuses others).
const (
	aclVersion  = 2
	aclUserObj  = 0x01
	aclUser     = 0x02
	aclGroupObj = 0x04
	aclGroup    = 0x08
	aclMask     = 0x10
	aclOther    = 0x20
	aclNoID     = 0xffffffff
	aclRead     = 4
)

type aclEntry struct {
	tag, perm uint16
	id        uint32
}

// readACL is f's access ACL, the one its mode makes when it has none.
func readACL(f *os.File) ([]aclEntry, error) {
	buf := make([]byte, 4+8*64)
	for {
		n, err := unix.Fgetxattr(int(f.Fd()), aclXattr, buf)
		if errors.Is(err, unix.ERANGE) && len(buf) < 1<<16 {
			buf = make([]byte, 2*len(buf))
			continue
		}
		if errors.Is(err, unix.ENODATA) {
			st, err := f.Stat()
			if err != nil {
				return nil, err
			}
			m := uint16(st.Mode().Perm())
			return []aclEntry{{aclUserObj, m >> 6 & 7, aclNoID}, {aclGroupObj, m >> 3 & 7, aclNoID}, {aclOther, m & 7, aclNoID}}, nil
		}
		if err != nil {
			return nil, err
		}
		b := buf[:n]
		if len(b) < 4 || binary.LittleEndian.Uint32(b) != aclVersion || (len(b)-4)%8 != 0 {
			return nil, fmt.Errorf("%s: not a version %d ACL", aclXattr, aclVersion)
		}
		var es []aclEntry
		for b = b[4:]; len(b) > 0; b = b[8:] {
			es = append(es, aclEntry{binary.LittleEndian.Uint16(b), binary.LittleEndian.Uint16(b[2:]), binary.LittleEndian.Uint32(b[4:])})
		}
		return es, nil
	}
}

// writeACL sets f's access ACL to es, in the kernel's order, with a mask
// that lets the named groups' permissions through when there are any.
func writeACL(f *os.File, es []aclEntry) error {
	es = slices.DeleteFunc(es, func(e aclEntry) bool { return e.tag == aclMask })
	var mask uint16
	named := false
	for _, e := range es {
		switch e.tag {
		case aclGroup, aclUser:
			named = true
			mask |= e.perm
		case aclGroupObj:
			mask |= e.perm
		}
	}
	if named {
		es = append(es, aclEntry{aclMask, mask, aclNoID})
	}
	slices.SortFunc(es, func(a, b aclEntry) int {
		if a.tag != b.tag {
			return int(a.tag) - int(b.tag)
		}
		return int(int64(a.id) - int64(b.id))
	})
	b := binary.LittleEndian.AppendUint32(nil, aclVersion)
	for _, e := range es {
		b = binary.LittleEndian.AppendUint16(b, e.tag)
		b = binary.LittleEndian.AppendUint16(b, e.perm)
		b = binary.LittleEndian.AppendUint32(b, e.id)
	}
	return unix.Fsetxattr(int(f.Fd()), aclXattr, b, 0)
}

// changeGroupRead adds (grant) or removes the entry letting group gid
// read path, a regular file: a symbolic link is refused, not followed
// (the jail's user names what its root holds). The file's lock in l is
// held meanwhile (restores of one template change its one ACL at once),
// waited for no longer than ctx.
func (l *aclLocks) changeGroupRead(ctx context.Context, path string, gid int, grant bool) error {
	return l.edit(ctx, path, func(es []aclEntry) []aclEntry {
		es = slices.DeleteFunc(es, func(e aclEntry) bool { return e.tag == aclGroup && e.id == uint32(gid) })
		if grant {
			es = append(es, aclEntry{aclGroup, aclRead, uint32(gid)})
		}
		return es
	})
}

// dropGroups removes from path's ACL the entries of the named groups
// drop reports, as changeGroupRead removes one.
func (l *aclLocks) dropGroups(ctx context.Context, path string, drop func(gid int) bool) error {
	return l.edit(ctx, path, func(es []aclEntry) []aclEntry {
		return slices.DeleteFunc(es, func(e aclEntry) bool { return e.tag == aclGroup && drop(int(e.id)) })
	})
}

// edit changes regular file path's ACL to what change makes of it,
// holding the file's lock in l (waited for no longer than ctx).
func (l *aclLocks) edit(ctx context.Context, path string, change func([]aclEntry) []aclEntry) error {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		return fmt.Errorf("acl of %s: not a regular file (%v)", path, err)
	}
	unlock, err := l.lock(ctx, inode{dev: uint64(st.Dev), ino: st.Ino})
	if err != nil {
		return fmt.Errorf("acl of %s: %w", path, err)
	}
	defer unlock()
	es, err := readACL(f)
	if err != nil {
		return fmt.Errorf("acl of %s: %w", path, err)
	}
	if err := writeACL(f, change(es)); err != nil {
		return fmt.Errorf("acl of %s: %w", path, err)
	}
	return nil
}

// groupCanRead reports whether path's ACL names group gid with read.
func groupCanRead(path string, gid int) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	es, err := readACL(f)
	if err != nil {
		return false, err
	}
	return slices.Contains(es, aclEntry{aclGroup, aclRead, uint32(gid)}), nil
}
