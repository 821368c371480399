package qemu

import (
	"bytes"
	"context"
	"crypto/sha256"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
	"github.com/nixos-fireactions/nixos-fireactions/vmm"
)

// TestImageRootRestoresEachHaveTheirOwnWritableDisk: an image pool's
// template boots with the pool's drives — the image read-only, a
// writable disk — and is saved while it waits for its identity, having
// touched neither (only the kernel's probe read them). Two VMs are
// restored from it, each with its own writable disk attached under the
// same drive IDs and order: "a" a clone of the one formatted disk the
// template's was cloned from (as vmroot makes them), "b" one formatted
// on its own (another file system UUID: what the template's memory holds
// of its drive must not stand for the restore's). Each mounts the image
// and its disk under an overlay, writes a file named for itself into its
// root and lists it: each finds its own file and not the other's, and the
// image's marker; the file is on its own disk, the image file is
// unchanged. The control: a restore "c" given a's disk sees a's file, so
// the listing would show a shared disk.
func TestImageRootRestoresEachHaveTheirOwnWritableDisk(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	r := newWarmRig(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	os.MkdirAll(filepath.Join(src, "etc"), 0o755)
	os.WriteFile(filepath.Join(src, "etc", "marker"), []byte("image-v1\n"), 0o644)
	image := filepath.Join(dir, "image.ext4")
	mkfs(t, image, "16M", "-d", src)
	before := fileSum(t, image)
	base := filepath.Join(dir, "base.img")
	mkfs(t, base, "64M")
	disks := map[string]string{}
	for _, name := range []string{"t", "a"} {
		disks[name] = filepath.Join(dir, name+".img")
		if out, err := exec.Command("cp", "--sparse=always", base, disks[name]).CombinedOutput(); err != nil {
			t.Fatalf("clone the writable disk: %v: %s", err, out)
		}
	}
	disks["b"] = filepath.Join(dir, "b.img")
	mkfs(t, disks["b"], "64M")
	uuidB := fsUUID(t, disks["b"])
	if uuidB == fsUUID(t, disks["a"]) {
		t.Fatal("the two restores' disks have one file system UUID: b is no disk of its own")
	}
	disks["c"] = disks["a"]
	r.drives = func(name string) []vmm.Drive {
		return []vmm.Drive{{ID: "fa-image", Path: image, ReadOnly: true}, {ID: "fa-writable", Path: disks[name]}}
	}
	state, tplConsole := r.template(ctx)
	if strings.Contains(tplConsole, "warmguest: root") {
		t.Fatalf("the template mounted its root:\n%s", tplConsole)
	}
	root := &agentproto.Root{FSType: "ext4", Image: agentproto.Disk{Serial: "fa-image"}, Writable: agentproto.Disk{Serial: "fa-writable"}}
	probe := func(name string) string {
		m, s := r.restore(ctx, name, state)
		id := agentproto.Identity{Config: agentproto.Config{VMID: "vm-" + name, Root: root}, Seed: make([]byte, 64), Now: time.Now()}
		r.hand(ctx, m, s, id)
		select {
		case <-m.Done():
		case <-time.After(stepWait):
			t.Fatalf("%s did not end after its root probe; console:\n%s", name, readConsole(s.ConsoleLog))
		}
		g := regexp.MustCompile(`warmguest: root vm=vm-` + name + ` files=(\S*) marker=(\S*)`).FindStringSubmatch(readConsole(s.ConsoleLog))
		if g == nil {
			t.Fatalf("%s printed no root listing; console:\n%s", name, readConsole(s.ConsoleLog))
		}
		if g[2] != "image-v1" {
			t.Errorf("%s read the image's marker as %q", name, g[2])
		}
		return g[1]
	}
	a, b := probe("a"), probe("b")
	for _, c := range []struct{ name, files, own, other string }{{"a", a, "own-vm-a", "own-vm-b"}, {"b", b, "own-vm-b", "own-vm-a"}} {
		files := strings.Split(c.files, ",")
		if !slices.Contains(files, c.own) || slices.Contains(files, c.other) || !slices.Contains(files, "etc") {
			t.Errorf("restore %s's root lists %v; want etc and %s, not %s", c.name, files, c.own, c.other)
		}
		if got := debugfsCat(t, disks[c.name[:1]], "/upper/"+c.own); got != "vm-"+c.name {
			t.Errorf("restore %s's writable disk holds %q at /upper/%s", c.name, got, c.own)
		}
	}
	if got := fsUUID(t, disks["b"]); got != uuidB {
		t.Errorf("b's disk has file system UUID %s after its restore, %s before: the template's superblock was written over it", got, uuidB)
	}
	if got := debugfsCat(t, disks["t"], "/upper/own-vm-a"); got != "" {
		t.Errorf("the template's writable disk holds a restore's file: %q", got)
	}
	if !slices.Contains(strings.Split(probe("c"), ","), "own-vm-a") {
		t.Error("control: a restore given a's writable disk does not see a's file: the listing cannot show a shared disk")
	}
	if after := fileSum(t, image); !bytes.Equal(before, after) {
		t.Error("the image drive changed")
	}
}

// mkfs makes an ext4 file system of size in file, with extra mke2fs
// arguments.
func mkfs(t testing.TB, file, size string, extra ...string) {
	t.Helper()
	args := append([]string{"-q", "-F", "-t", "ext4"}, extra...)
	if out, err := exec.Command("mke2fs", append(args, file, size)...).CombinedOutput(); err != nil {
		t.Fatalf("mke2fs %s: %v: %s", file, err, out)
	}
}

func fileSum(t testing.TB, file string) []byte {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return s[:]
}

// debugfsLs lists directory path of the ext4 file system in disk.
func debugfsLs(t testing.TB, disk, path string) string {
	t.Helper()
	out, err := exec.Command("debugfs", "-R", "ls -l "+path, disk).Output()
	if err != nil {
		t.Fatalf("debugfs %s: %v", disk, err)
	}
	return string(out)
}

// debugfsCat is the content of path in the ext4 file system in disk, ""
// when it has none.
func debugfsCat(t testing.TB, disk, path string) string {
	t.Helper()
	out, err := exec.Command("debugfs", "-R", "cat "+path, disk).Output()
	if err != nil {
		t.Fatalf("debugfs %s: %v", disk, err)
	}
	return string(out)
}

// fsUUID is the file system UUID of the ext4 file system in disk.
func fsUUID(t testing.TB, disk string) string {
	t.Helper()
	out, err := exec.Command("dumpe2fs", "-h", disk).Output()
	if err != nil {
		t.Fatalf("dumpe2fs %s: %v", disk, err)
	}
	m := regexp.MustCompile(`(?m)^Filesystem UUID:\s+(\S+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("dumpe2fs %s: no UUID in %s", disk, out)
	}
	return string(m[1])
}
