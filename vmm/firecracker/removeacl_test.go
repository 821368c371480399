package firecracker

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/nixos-fireactions/nixos-fireactions/internal/hosttest"
	"github.com/nixos-fireactions/nixos-fireactions/vmm"
)

// A jail whose entry on a template's files could not be dropped when it
// is removed stays (under a name of its own), with its links to them: it
// is what the start-up sweep (RemoveStaleJails) finds the stale entry
// by, and tries again.
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
	kept, _ := filepath.Glob(filepath.Join(dir, keptPrefix+"*", "root"))
	if len(kept) != 1 {
		t.Fatalf("kept jails %v; want the one whose ACL entry stayed", kept)
	}
	if _, err := os.Stat(filepath.Join(kept[0], memName)); err != nil {
		t.Fatalf("the kept jail lost its link to the template's file: %v", err)
	}
	if _, err := os.Stat(filepath.Join(kept[0], filepath.Base(disk))); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the kept jail still holds the VM's disk (%v)", err)
	}
}

// A restore's jail kept for its ACL entry leaves its VM id's jail free:
// the cold boot its VM falls back to (the same id) gets a jail, where it
// failed with "is vm …'s still there?". The kept jail, with its links,
// stays under a name of its own for the start-up sweep, which drops its
// entry and removes it once it can.
func TestAJailKeptForItsACLEntryLeavesItsIDToTheNextJail(t *testing.T) {
	hosttest.RequireRoot(t, "a jail's files and TAP are given to its user")
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	mounts := filepath.Join(dir, "mounts") // no cgroup v2 mount: no cgroup to remove
	kernel, state, mem := filepath.Join(dir, "kernel"), filepath.Join(dir, "tpl.state"), filepath.Join(dir, "tpl.mem")
	for f, mode := range map[string]os.FileMode{mounts: 0o600, kernel: 0o644, state: 0o600, mem: 0o600} {
		if err := os.WriteFile(f, []byte("x"), mode); err != nil {
			t.Fatal(err)
		}
	}
	dropFails := true
	var dropped []string // the files whose entries were dropped
	d := &Driver{Binary: exe, Jailer: &Jailer{ChrootBaseDir: jailBase(t), UID: jailUID, GID: jailGID, Slots: 8, MountTable: mounts,
		share: snapshotShare{
			grant: func(string, int) error { return nil },
			drop: func(p string, _ func(int) bool) error {
				if dropFails {
					return errors.New("xattr write: input/output error")
				}
				dropped = append(dropped, p)
				return nil
			},
		}}}
	log := slog.New(slog.DiscardHandler)
	restore := vmm.Spec{ID: "0a1b2c3d4e5f", Kernel: kernel, TAP: testTAP(t), Slot: 3,
		Restore: state, MemoryFile: mem, Identity: filepath.Join(dir, "identity.sock")}
	jl, err := d.Jailer.prepare(t.Context(), log, exe, restore)
	if err != nil {
		t.Fatal(err)
	}
	if err := jl.remove(); err == nil {
		t.Fatal("positive control: the jail whose ACL entry stayed was not kept")
	}

	cold := restore
	cold.Restore, cold.MemoryFile, cold.Identity = "", "", ""
	cold.Initramfs = filepath.Join(dir, "initramfs")
	if err := os.WriteFile(cold.Initramfs, []byte("i"), 0o600); err != nil {
		t.Fatal(err)
	}
	next, err := d.Jailer.prepare(t.Context(), log, exe, cold)
	if err != nil {
		t.Fatalf("the next jail of vm %s, beside the kept one: %v", cold.ID, err)
	}
	if err := next.remove(); err != nil {
		t.Fatal(err)
	}

	dropFails = false
	if err := d.RemoveStaleJails(); err != nil {
		t.Fatal(err)
	}
	if len(dropped) != 2 || filepath.Base(dropped[0]) != stateName || filepath.Base(dropped[1]) != memName {
		t.Errorf("the sweep dropped the entries of %v; want the kept jail's links to the template's %s and %s", dropped, stateName, memName)
	}
	left, _ := os.ReadDir(filepath.Dir(jl.dir))
	if len(left) != 0 {
		t.Errorf("jails left after the sweep: %v", left)
	}
}
