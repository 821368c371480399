package firecracker

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// A jail whose entry on a template's files could not be dropped when it
// is removed stays, with its links to them: it is what the start-up
// sweep (RemoveStaleJails) finds the stale entry by, and tries again.
// Removed, its entry would outlive it for good. The rest of it (the VM's
// disks, what its job wrote) goes at once.
func TestAJailWhoseACLEntryCouldNotBeDroppedIsKept(t *testing.T) {
	dir := t.TempDir()
	tpl := filepath.Join(dir, "template.mem")
	if err := os.WriteFile(tpl, []byte("memory"), 0o600); err != nil {
		t.Fatal(err)
	}
	mounts := filepath.Join(dir, "mounts") // no cgroup v2 mount: no cgroup to remove
	if err := os.WriteFile(mounts, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	j := &Jailer{MountTable: mounts, share: snapshotShare{
		drop: func(string, func(int) bool) error { return errors.New("xattr write: input/output error") },
	}}
	jl := &jail{j: j, id: "aclkept", execFile: "firecracker", dir: filepath.Join(dir, "jail"),
		uid: os.Getuid(), gid: os.Getgid(), prepared: true}
	if err := os.MkdirAll(jl.root(), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(tpl, jl.hostPath(memName)); err != nil {
		t.Fatal(err)
	}
	disk := filepath.Join(jl.root(), "rootfs.ext4")
	if err := os.WriteFile(disk, []byte("a job's data"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := jl.remove(); err == nil {
		t.Error("the removal of a jail whose ACL entry stayed reported no error")
	}
	if _, err := os.Stat(jl.hostPath(memName)); err != nil {
		t.Fatalf("the jail whose ACL entry stayed was removed: %v", err)
	}
	if _, err := os.Stat(disk); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the kept jail still holds the VM's disk (%v)", err)
	}
}
