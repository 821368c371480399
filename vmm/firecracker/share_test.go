package firecracker

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/nixos-fireactions/nixos-fireactions/internal/hosttest"
	"github.com/nixos-fireactions/nixos-fireactions/vmm"
	"golang.org/x/sys/unix"
)

// noACLJail is a jail in a temporary directory whose file system has no
// ACLs and free bytes free, logging to log; src is a template's
// snapshot file of size bytes beside it.
func noACLJail(t *testing.T, free uint64, size int) (jl *jail, src string, log *hosttest.SyncBuffer) {
	t.Helper()
	dir := t.TempDir()
	src = filepath.Join(dir, "template.mem")
	if err := os.WriteFile(src, make([]byte, size), 0o600); err != nil {
		t.Fatal(err)
	}
	jdir := filepath.Join(dir, "jail")
	if err := os.Mkdir(jdir, 0o700); err != nil {
		t.Fatal(err)
	}
	log = &hosttest.SyncBuffer{}
	j := &Jailer{share: snapshotShare{
		grant: func(string, int) error { return unix.EOPNOTSUPP },
		free:  func(string) (uint64, error) { return free, nil },
	}}
	jl = &jail{j: j, id: "noacl", dir: jdir, uid: os.Getuid(), gid: os.Getgid(), prepared: true,
		log: slog.New(slog.NewTextHandler(log, nil))}
	return jl, src, log
}

// On a file system without ACLs a restore gets a copy of the snapshot
// file of its own, and the log says why and how much each VM copies.
func TestWithoutACLsARestoreGetsACopyAndTheLogSaysWhy(t *testing.T) {
	jl, src, log := noACLJail(t, 1<<40, 4096)
	dst := filepath.Join(jl.dir, memName)
	if err := jl.linkSnapshot(context.Background(), src, dst); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(dst)
	if err != nil {
		t.Fatal(err)
	}
	if st.Sys().(*syscall.Stat_t).Nlink != 1 || st.Size() != 4096 {
		t.Fatalf("the jail's file: %d links, %d bytes; want a copy of its own, 4096 bytes", st.Sys().(*syscall.Stat_t).Nlink, st.Size())
	}
	if got := log.String(); !strings.Contains(got, "no ACLs") || !strings.Contains(got, "bytes=4096") {
		t.Errorf("no warning saying the file system has no ACLs and the size copied:\n%s", got)
	}
}

// A copy its file system has no room for (its size and a margin) is
// refused: the restore fails, and its VM boots cold instead of filling
// the disk.
func TestWithoutACLsACopyTheFileSystemHasNoRoomForIsRefused(t *testing.T) {
	jl, src, _ := noACLJail(t, 4096+copyMargin-1, 4096)
	dst := filepath.Join(jl.dir, memName)
	err := jl.linkSnapshot(context.Background(), src, dst)
	if err == nil || !strings.Contains(err.Error(), "no room") {
		t.Fatalf("a copy with %d bytes free: %v; want it refused for want of room", 4096+copyMargin-1, err)
	}
	if _, err := os.Lstat(dst); !os.IsNotExist(err) {
		t.Errorf("the refused copy is left in the jail: %v", err)
	}
}

// Copies under way count against the free space: of two concurrent
// copies the file system has room for one of, the second is refused
// while the first is still copying (statfs does not see it yet).
func TestWithoutACLsConcurrentCopiesTheFileSystemHasRoomForOneOfAreRefused(t *testing.T) {
	const size = 4096
	first, src, _ := noACLJail(t, 2*size+copyMargin-1, size)
	second := &jail{j: first.j, id: "noacl2", dir: t.TempDir(), uid: first.uid, gid: first.gid,
		prepared: true, log: first.log}
	var secondErr error
	first.j.share.copy = func(src, dst string) error {
		first.j.share.copy = nil // the second copies at once
		secondErr = second.linkSnapshot(context.Background(), src, filepath.Join(second.dir, memName))
		return copyFile(src, dst, 0o600)
	}
	if err := first.linkSnapshot(context.Background(), src, filepath.Join(first.dir, memName)); err != nil {
		t.Fatalf("the first copy: %v", err)
	}
	if secondErr == nil || !strings.Contains(secondErr.Error(), "no room") {
		t.Fatalf("a second copy while the first is under way, room for one: %v; want it refused for want of room", secondErr)
	}
	// Once the first is done its bytes are the file system's to count.
	third := &jail{j: first.j, id: "noacl3", dir: t.TempDir(), uid: first.uid, gid: first.gid,
		prepared: true, log: first.log}
	if err := third.linkSnapshot(context.Background(), src, filepath.Join(third.dir, memName)); err != nil {
		t.Errorf("a copy after the first is done: %v; want the first's bytes no longer counted as under way", err)
	}
}

// The free space is statfs's available blocks of the fundamental block
// size (f_frsize), not of the preferred I/O size (f_bsize).
func TestFreeSpaceCountsBlocksOfTheFundamentalBlockSize(t *testing.T) {
	st := unix.Statfs_t{Bavail: 1000, Bsize: 1 << 20, Frsize: 4096}
	if got := availableBytes(&st); got != 1000*4096 {
		t.Errorf("free space of %d blocks, f_bsize %d, f_frsize %d: %d bytes; want %d", st.Bavail, st.Bsize, st.Frsize, got, 1000*4096)
	}
}

// A boot file the jail gets a copy of (a kernel not everyone may read,
// or one on a read-only /nix/store) its file system has no room for (its
// size and a margin of bootCopyMargin) is refused like a snapshot's
// copy, and the error names the file and the file system (the jail's
// directory on it); one with room for it and that margin is copied: a
// boot needs no gigabyte spare, as a restore's snapshot copy does.
func TestABootFileCopyTheFileSystemHasNoRoomForIsRefused(t *testing.T) {
	for _, room := range []bool{false, true} {
		t.Run(map[bool]string{false: "no room", true: "room for it and the margin"}[room], func(t *testing.T) {
			free := uint64(4096 + bootCopyMargin - 1)
			if room {
				free++
			}
			jl, src, _ := noACLJail(t, free, 4096) // src: mode 0600, so copied
			if err := os.Mkdir(jl.root(), 0o700); err != nil {
				t.Fatal(err)
			}
			initrd := filepath.Join(t.TempDir(), "initramfs")
			if err := os.WriteFile(initrd, []byte("i"), 0o600); err != nil {
				t.Fatal(err)
			}
			err := jl.linkBoot(context.Background(), vmm.Spec{Kernel: src, Initramfs: initrd})
			if room {
				if err != nil {
					t.Fatalf("a kernel copy with %d bytes free: %v; want it copied", free, err)
				}
				if _, err := os.Lstat(jl.hostPath(kernelName)); err != nil {
					t.Errorf("the kernel is not in the jail: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), "no room") || !strings.Contains(err.Error(), src) || !strings.Contains(err.Error(), jl.root()) {
				t.Fatalf("a kernel copy with %d bytes free: %v; want it refused for want of room, naming %s and %s", free, err, src, jl.root())
			}
			if _, err := os.Lstat(jl.hostPath(kernelName)); !os.IsNotExist(err) {
				t.Errorf("the refused copy is left in the jail: %v", err)
			}
		})
	}
}
