package firecracker

import (
	"os"
	"path/filepath"
	"testing"
)

// Two restores' jail groups let read one file: taking one's entry back
// leaves the other's; the last taken back, the file is its owner's
// again (no bit for group or others). A symbolic link in its place (a
// jail's user names what its root holds) is refused, its target's ACL
// untouched.
func TestSnapshotACLEntriesAreEachJailsOwn(t *testing.T) {
	f := filepath.Join(t.TempDir(), "snapshot.mem")
	if err := os.WriteFile(f, []byte("memory"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, gid := range []int{64201, 64202} {
		if err := changeGroupRead(f, gid, true); err != nil {
			t.Fatal(err)
		}
	}
	can := func(gid int) bool {
		ok, err := groupCanRead(f, gid)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	if !can(64201) || !can(64202) || can(64203) {
		t.Fatalf("after two grants: %v %v %v", can(64201), can(64202), can(64203))
	}
	if st, _ := os.Stat(f); st.Mode().Perm()&0o007 != 0 {
		t.Fatalf("others may read: %v", st.Mode())
	}
	if err := changeGroupRead(f, 64201, false); err != nil {
		t.Fatal(err)
	}
	if can(64201) || !can(64202) {
		t.Fatalf("after one taken back: %v %v", can(64201), can(64202))
	}
	link := filepath.Join(filepath.Dir(f), "link")
	if err := os.Symlink(f, link); err != nil {
		t.Fatal(err)
	}
	if err := changeGroupRead(link, 64202, false); err == nil || !can(64202) {
		t.Fatalf("through a symbolic link: %v; the target's entry kept: %v", err, can(64202))
	}
	if err := changeGroupRead(f, 64202, false); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(f); can(64202) || st.Mode().Perm() != 0o600 {
		t.Fatalf("after the last taken back: %v, %v", can(64202), st.Mode())
	}
}
