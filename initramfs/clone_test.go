package initramfs

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
)

// perVMBytes writes n VMs' initramfs from a pool archive of size bytes in
// dir and returns the file system space they took per VM (free space
// before minus after: shared blocks count once), checking each file holds
// the pool archive then the VM's own config.
func perVMBytes(t *testing.T, dir string, size, n int) int64 {
	t.Helper()
	pool := make([]byte, size)
	rand.Read(pool)
	poolPath := filepath.Join(dir, "pool.cpio")
	must(t, os.WriteFile(poolPath, pool, 0o644))
	syscall.Sync()
	before := freeBytes(t, dir)
	for i := 0; i < n; i++ {
		dst := filepath.Join(dir, fmt.Sprintf("vm%d.cpio", i))
		cfg := agentproto.Config{VMID: fmt.Sprintf("vm%d", i), Report: agentproto.Reporter{URL: "http://h", Token: "t"}}
		must(t, WriteVM(dst, poolPath, cfg))
		got, err := os.ReadFile(dst)
		must(t, err)
		if len(got) > size+64<<10 || !bytes.Equal(got[:size], pool) || !bytes.Contains(got[size:], []byte(`"vm_id":"`+cfg.VMID+`"`)) {
			t.Fatalf("%s does not hold the pool archive then its own config", dst)
		}
	}
	syscall.Sync()
	return (before - freeBytes(t, dir)) / int64(n)
}

func freeBytes(t *testing.T, dir string) int64 {
	var st syscall.Statfs_t
	must(t, syscall.Statfs(dir, &st))
	return int64(st.Bfree) * st.Bsize
}

// TestVMInitramfsSharesThePoolArchiveWhereTheFileSystemCan: on a file
// system with reflinks (XFS here, made on a loop device: root and
// xfsprogs, which make test installs) a VM's initramfs takes about the
// room of its own config, not a copy of the pool archive: WriteVM copies
// with io.Copy, which is copy_file_range(2), which such file systems
// answer with a reflink. Elsewhere (tmpfs, ext4) it is a copy. Both hold
// the same bytes.
func TestVMInitramfsSharesThePoolArchiveWhereTheFileSystemCan(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root to mount an XFS image (make test runs as root)")
	}
	const size, n = 8 << 20, 8
	work := t.TempDir()
	mount := func(dir string, args ...string) {
		must(t, os.MkdirAll(dir, 0o700))
		if out, err := exec.Command("mount", append(args, dir)...).CombinedOutput(); err != nil {
			t.Fatalf("mount %v: %v: %s", args, err, out)
		}
		t.Cleanup(func() { exec.Command("umount", dir).Run() })
	}
	img := filepath.Join(work, "xfs.img")
	f, err := os.Create(img)
	must(t, err)
	must(t, f.Truncate(512<<20))
	f.Close()
	if out, err := exec.Command("mkfs.xfs", "-q", "-m", "reflink=1", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.xfs (xfsprogs): %v: %s", err, out)
	}
	xfs, tmpfs := filepath.Join(work, "xfs"), filepath.Join(work, "tmpfs")
	mount(xfs, "-o", "loop", img)
	mount(tmpfs, "-t", "tmpfs", "-o", "size=128m", "fa-clone-test")

	copied := perVMBytes(t, tmpfs, size, n)
	shared := perVMBytes(t, xfs, size, n)
	t.Logf("FIGURE disk per VM initramfs, pool archive %d bytes: %d bytes copied (tmpfs), %d bytes with a reflink (XFS)", size, copied, shared)
	if copied < size {
		t.Errorf("on tmpfs each VM took %d bytes, less than the pool archive: the measure is broken", copied)
	}
	if shared > 256<<10 {
		t.Errorf("on XFS each VM took %d bytes: the pool archive was copied, not shared", shared)
	}
}
