package imagestore

import (
	"archive/tar"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"

	"github.com/nixos-fireactions/nixos-fireactions/internal/hosttest"
)

// want is one file of the tree a flattened image must hold.
type want struct {
	kind    uint32 // unix.S_IFREG, ...
	perm    uint32 // mode & 07777; not compared for symlinks
	uid     uint32
	gid     uint32
	content string // regular files
	link    string // symlinks
	rdev    uint64 // devices
}

func reg(perm, uid, gid uint32, content string) want {
	return want{kind: unix.S_IFREG, perm: perm, uid: uid, gid: gid, content: content}
}
func wdir(perm, uid, gid uint32) want {
	return want{kind: unix.S_IFDIR, perm: perm, uid: uid, gid: gid}
}
func wlink(target string) want { return want{kind: unix.S_IFLNK, link: target} }

const escapeProbe = "fa-imagestore-escape-probe"

// testLayers are three layers exercising what flattening must get right:
// whiteouts of files and directories, an opaque directory whose marker
// comes after one of its layer's own files, hard links within and across
// layers, a whiteout of one name of a hard-linked file, a path through a
// symlinked directory, a directory replaced by a file, a directory's
// metadata changed by a later layer, set-id bits, owners, an extended
// attribute (and one that must be dropped), a fifo, a device node,
// directories a layer leaves implicit, and a symlink pointing out of the
// root that a later layer writes through.
func testLayers(t testing.TB) [][]byte {
	xattrFile := file("attr", 0o640, 0, 1001, "x")
	xattrFile.xattrs = map[string]string{"user.test": "hello", "security.selinux": "system_u:object_r:etc_t:s0"}
	l1 := []entry{
		dir("etc", 0o755, 0, 0),
		file("etc/passwd", 0o644, 0, 0, "root:x:0:0:root:/root:/bin/sh\nrunner:x:1001:1001::/home/runner:/bin/sh\n"),
		file("etc/group", 0o644, 0, 0, "root:x:0:\nrunner:x:1001:\n"),
		dir("bin", 0o755, 0, 0),
		file("bin/tool", 0o755, 0, 0, "v1"),
		file("bin/hl-src", 0o644, 1001, 1001, "linked"),
		hardlink("bin/hl-dst", "bin/hl-src"),
		file("bin/su", 0o4755, 0, 0, "su"),
		dir("usr", 0o755, 0, 0),
		dir("usr/lib", 0o755, 0, 0),
		symlink("lib", "usr/lib"),
		file("usr/lib/libx.so", 0o644, 0, 0, "x"),
		dir("opaque", 0o755, 0, 0),
		file("opaque/a", 0o644, 0, 0, "a"),
		file("opaque/b", 0o644, 0, 0, "b"),
		dir("opaque/sub", 0o755, 0, 0),
		file("opaque/sub/c", 0o644, 0, 0, "c"),
		file("to-delete", 0o644, 0, 0, "gone"),
		dir("to-delete-dir", 0o755, 0, 0),
		file("to-delete-dir/f", 0o644, 0, 0, "gone"),
		dir("replace-me", 0o755, 0, 0),
		file("replace-me/child", 0o644, 0, 0, "gone"),
		xattrFile,
		{name: "fifo", typ: tar.TypeFifo, mode: 0o600},
		dir("dev", 0o755, 0, 0),
		{name: "dev/null", typ: tar.TypeChar, mode: 0o666, major: 1, minor: 3},
		dir("home", 0o755, 0, 0),
		dir("home/runner", 0o700, 1001, 1001),
		file("implicit/parent/file", 0o644, 0, 0, "deep"),
		dir("tmp", 0o1777, 0, 0),
	}
	l2 := []entry{
		file(".wh.to-delete", 0o644, 0, 0, ""),
		file(".wh.to-delete-dir", 0o644, 0, 0, ""),
		file("opaque/early", 0o644, 0, 0, "early"),
		file("opaque/.wh..wh..opq", 0o644, 0, 0, ""),
		file("opaque/new", 0o644, 0, 0, "new"),
		dir("etc", 0o750, 0, 0),
		file("bin/tool", 0o700, 0, 0, "v2"),
		hardlink("bin/hl-cross", "bin/hl-src"),
		file("lib/liby.so", 0o644, 0, 0, "y"),
		file("replace-me", 0o600, 0, 0, "now a file"),
		symlink("escape", "/../../../tmp"),
	}
	l3 := []entry{
		file("escape/"+escapeProbe, 0o644, 0, 0, "inside"),
		file("bin/.wh.hl-dst", 0o644, 0, 0, ""),
	}
	return [][]byte{tarBytes(t, l1), tarBytes(t, l2), tarBytes(t, l3)}
}

// wantTree is the union of testLayers.
func wantTree() map[string]want {
	return map[string]want{
		"etc":                  wdir(0o750, 0, 0),
		"etc/passwd":           reg(0o644, 0, 0, "root:x:0:0:root:/root:/bin/sh\nrunner:x:1001:1001::/home/runner:/bin/sh\n"),
		"etc/group":            reg(0o644, 0, 0, "root:x:0:\nrunner:x:1001:\n"),
		"bin":                  wdir(0o755, 0, 0),
		"bin/tool":             reg(0o700, 0, 0, "v2"),
		"bin/hl-src":           reg(0o644, 1001, 1001, "linked"),
		"bin/hl-cross":         reg(0o644, 1001, 1001, "linked"),
		"bin/su":               reg(0o4755, 0, 0, "su"),
		"usr":                  wdir(0o755, 0, 0),
		"usr/lib":              wdir(0o755, 0, 0),
		"lib":                  wlink("usr/lib"),
		"usr/lib/libx.so":      reg(0o644, 0, 0, "x"),
		"usr/lib/liby.so":      reg(0o644, 0, 0, "y"),
		"opaque":               wdir(0o755, 0, 0),
		"opaque/early":         reg(0o644, 0, 0, "early"),
		"opaque/new":           reg(0o644, 0, 0, "new"),
		"replace-me":           reg(0o600, 0, 0, "now a file"),
		"attr":                 reg(0o640, 0, 1001, "x"),
		"fifo":                 {kind: unix.S_IFIFO, perm: 0o600},
		"dev":                  wdir(0o755, 0, 0),
		"dev/null":             {kind: unix.S_IFCHR, perm: 0o666, rdev: unix.Mkdev(1, 3)},
		"home":                 wdir(0o755, 0, 0),
		"home/runner":          wdir(0o700, 1001, 1001),
		"implicit":             wdir(0o755, 0, 0),
		"implicit/parent":      wdir(0o755, 0, 0),
		"implicit/parent/file": reg(0o644, 0, 0, "deep"),
		"tmp":                  wdir(0o1777, 0, 0),
		"tmp/" + escapeProbe:   reg(0o644, 0, 0, "inside"),
		"escape":               wlink("/../../../tmp"),
	}
}

func TestPulledImageIsTheUnionOfItsLayers(t *testing.T) {
	hosttest.RequireRoot(t, flattenNeedsRoot)
	os.Remove("/tmp/" + escapeProbe)
	reg := startRegistry(t)
	var layers []v1.Layer
	for _, b := range testLayers(t) {
		layers = append(layers, hosttest.Layer(t, b))
	}
	cfg := v1.Config{User: "runner", Env: []string{"PATH=/usr/bin:/bin", "LANG=C.UTF-8"}, WorkingDir: "/home/runner"}
	digest := hosttest.PushImage(t, reg.host, "test/union:v1", cfg, layers...)

	for _, fsType := range []string{FSErofs, FSExt4} {
		t.Run(fsType, func(t *testing.T) {
			s := openStore(t, tempStoreDir(t), fsType)
			im, err := s.Pull(ctxBackground(), reg.host+"/test/union:v1", PullIfNotPresent, nil)
			if err != nil {
				t.Fatal(err)
			}
			if im.Digest != digest {
				t.Fatalf("digest %s, pushed %s", im.Digest, digest)
			}
			if im.FSType != fsType || im.Layers != 3 {
				t.Fatalf("image %+v", im)
			}
			if _, err := os.Stat("/tmp/" + escapeProbe); err == nil {
				os.Remove("/tmp/" + escapeProbe)
				t.Fatal("a layer wrote through a symlink onto the host's /tmp")
			}
			mnt := mountImage(t, im.Path(), fsType)
			compareTree(t, mnt, wantTree(), fsType == FSExt4)

			// Hard links survive packing: one inode, two names.
			var a, b unix.Stat_t
			must(t, unix.Lstat(filepath.Join(mnt, "bin/hl-src"), &a))
			must(t, unix.Lstat(filepath.Join(mnt, "bin/hl-cross"), &b))
			if a.Ino != b.Ino || a.Nlink != 2 {
				t.Errorf("hl-src ino %d nlink %d, hl-cross ino %d: want one inode with 2 links", a.Ino, a.Nlink, b.Ino)
			}
			// The user attribute is kept, the SELinux label dropped.
			buf := make([]byte, 64)
			n, err := unix.Lgetxattr(filepath.Join(mnt, "attr"), "user.test", buf)
			if err != nil || string(buf[:n]) != "hello" {
				t.Errorf("xattr user.test = %q, %v; want hello", buf[:max(n, 0)], err)
			}
			if _, err := unix.Lgetxattr(filepath.Join(mnt, "attr"), "security.selinux", buf); err == nil {
				t.Error("security.selinux was carried into the image")
			}

			// What the host knows without mounting it.
			if im.Config.User != "runner" || im.Config.WorkingDir != "/home/runner" || !slices.Contains(im.Config.Env, "LANG=C.UTF-8") {
				t.Errorf("config %+v", im.Config)
			}
			if !strings.Contains(im.Passwd, "runner:x:1001:1001") {
				t.Errorf("passwd %q", im.Passwd)
			}
			ix, err := im.ReadIndex()
			if err != nil {
				t.Fatal(err)
			}
			if err := ix.Executable("/bin/tool"); err != nil {
				t.Errorf("bin/tool: %v", err)
			}
			if err := ix.Executable("/lib/libx.so"); err == nil || !strings.Contains(err.Error(), "not executable") {
				t.Errorf("lib/libx.so through the lib symlink: %v, want not executable", err)
			}
			if err := ix.Executable("/bin/act_runner"); err == nil {
				t.Error("a missing file was found")
			}
		})
	}
}

// compareTree walks the mounted image and compares it, file by file, with
// the wanted tree: the same paths, types, permissions, owners, contents,
// link targets and device numbers.
func compareTree(t *testing.T, mnt string, wantT map[string]want, ext4 bool) {
	t.Helper()
	got := map[string]bool{}
	err := filepath.WalkDir(mnt, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(mnt, p)
		if rel == "." {
			return nil
		}
		if ext4 && rel == "lost+found" {
			return filepath.SkipDir
		}
		got[rel] = true
		w, ok := wantT[rel]
		if !ok {
			t.Errorf("%s: in the image, not wanted", rel)
			return nil
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		var diffs []string
		if k := st.Mode & unix.S_IFMT; k != w.kind {
			diffs = append(diffs, fmt.Sprintf("type %o, want %o", k, w.kind))
		}
		if w.kind != unix.S_IFLNK && st.Mode&0o7777 != w.perm {
			diffs = append(diffs, fmt.Sprintf("mode %o, want %o", st.Mode&0o7777, w.perm))
		}
		if st.Uid != w.uid || st.Gid != w.gid {
			diffs = append(diffs, fmt.Sprintf("owner %d:%d, want %d:%d", st.Uid, st.Gid, w.uid, w.gid))
		}
		switch w.kind {
		case unix.S_IFREG:
			b, err := os.ReadFile(p)
			if err != nil || string(b) != w.content {
				diffs = append(diffs, fmt.Sprintf("content %q (%v), want %q", b, err, w.content))
			}
		case unix.S_IFLNK:
			if l, _ := os.Readlink(p); l != w.link {
				diffs = append(diffs, fmt.Sprintf("link %q, want %q", l, w.link))
			}
		case unix.S_IFCHR, unix.S_IFBLK:
			if st.Rdev != w.rdev {
				diffs = append(diffs, fmt.Sprintf("device %d, want %d", st.Rdev, w.rdev))
			}
		}
		if len(diffs) > 0 {
			t.Errorf("%s: %s", rel, strings.Join(diffs, "; "))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var missing []string
	for p := range wantT {
		if !got[p] {
			missing = append(missing, p)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("missing from the image: %v", missing)
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
