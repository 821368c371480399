package firecracker

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/nixos-fireactions/nixos-fireactions/internal/hosttest"
)

// fakeMonitor runs a process whose command line a jailed monitor of VM
// id has (a name with "firecracker" in it, --id id) until the test ends.
func fakeMonitor(t *testing.T, id string) {
	t.Helper()
	cmd := &exec.Cmd{Path: "/bin/sh", Args: []string{"firecracker", "-c", "read x", "sh", "--id", id}}
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Close(); _ = cmd.Wait() })
}

// A crash between an ACL grant and the jail's chown leaves a jail whose
// root is root's, with the template's files linked in and an entry
// letting its group read them. At start-up the entries on those files of
// groups in the jails' range that no running jail has go; a running
// jail's entry, and one outside the range, stay.
func TestAStartRemovesTheACLEntriesACrashLeftOnATemplatesFiles(t *testing.T) {
	hosttest.RequireRoot(t, "chown of a jail's root")
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	d := &Driver{Binary: exe, Jailer: &Jailer{Binary: "jailer", ChrootBaseDir: t.TempDir(), UID: jailUID, GID: jailGID, Slots: 8}}
	tpl := filepath.Join(t.TempDir(), "snapshot.mem")
	if err := os.WriteFile(tpl, []byte("memory"), 0o600); err != nil {
		t.Fatal(err)
	}
	var acls aclLocks
	jailWith := func(id string, gid int) {
		jl, err := d.Jailer.jailOf(exe, id)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(jl.root(), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Link(tpl, jl.hostPath(memName)); err != nil {
			t.Fatal(err)
		}
		if err := acls.changeGroupRead(t.Context(), tpl, gid, true); err != nil {
			t.Fatal(err)
		}
	}
	stale, live, outside := jailGID+3, jailGID+4, jailGID+8
	jailWith("crashed", stale) // its root left root's
	jailWith("running", live)
	jl, _ := d.Jailer.jailOf(exe, "running")
	if err := os.Chown(jl.root(), live, live); err != nil {
		t.Fatal(err)
	}
	fakeMonitor(t, "running")
	if err := acls.changeGroupRead(t.Context(), tpl, outside, true); err != nil {
		t.Fatal(err)
	}

	if err := d.RemoveStaleJails(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(jl.dir); err != nil {
		t.Fatalf("the running jail was removed (its monitor not seen): %v", err)
	}
	for gid, want := range map[int]bool{stale: false, live: true, outside: true} {
		if ok, err := groupCanRead(tpl, gid); err != nil || ok != want {
			t.Errorf("group %d reads the template's file: %v (%v); want %v", gid, ok, err, want)
		}
	}
}
