package agent

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
	"golang.org/x/sys/unix"
)

// addDisk makes a virtio disk visible to the agent: its sysfs serial and
// its device node.
func addDisk(t *testing.T, root, name, serial string) {
	t.Helper()
	must(t, os.MkdirAll(filepath.Join(root, "sys/block", name), 0o755))
	must(t, os.WriteFile(filepath.Join(root, "sys/block", name, "serial"), []byte(serial+"\n"), 0o444))
	must(t, os.MkdirAll(filepath.Join(root, "dev"), 0o755))
	must(t, os.WriteFile(filepath.Join(root, "dev", name), nil, 0o600))
}

func imageRootConfig(url string) agentproto.Config {
	cfg := testConfig(url)
	cfg.Root = &agentproto.Root{
		FSType:   "erofs",
		Image:    agentproto.Disk{Serial: "fa-image", Device: "/dev/vda"},
		Writable: agentproto.Disk{Serial: "fa-writable", Device: "/dev/vdb"},
	}
	return cfg
}

func TestImageRootIsMountedAndSwitchedToBeforeTheRunner(t *testing.T) {
	host := newHostServer(t, "vm-token")
	cfg := imageRootConfig(host.URL)
	root := newTestRoot(t, cfg)
	// The disks come in the other order than attached: serials decide.
	addDisk(t, root, "vda", "fa-writable")
	addDisk(t, root, "vdb", "fa-image")
	// The image's root directory (mounted here in a guest) is 1777.
	must(t, os.MkdirAll(filepath.Join(root, "mnt/image"), 0o755))
	must(t, unix.Chmod(filepath.Join(root, "mnt/image"), 0o1777))
	sys := newFakeSys(t, root)
	con := &syncBuffer{}
	a := &Agent{Root: root, Sys: sys, Console: con}

	a.Boot(context.Background())

	calls := sys.callList()
	want := []string{
		"network eth0 10.200.0.2/24",
		"mount erofs /mnt/image",
		"mount ext4 /mnt/writable",
		"mount overlay /mnt/root",
		"mount  /mnt/root/dev", "mount  /mnt/root/proc", "mount  /mnt/root/sys", "mount  /mnt/root/run",
		"switch_root /mnt/root",
	}
	i := slices.Index(calls, want[0])
	if i < 0 || len(calls) < i+len(want) || !slices.Equal(calls[i:i+len(want)], want) {
		t.Fatalf("calls:\n%s\nwant, in a row:\n%s\nconsole:\n%s", strings.Join(calls, "\n"), strings.Join(want, "\n"), con)
	}
	if !slices.ContainsFunc(calls[i+len(want):], func(c string) bool { return strings.HasPrefix(c, "start ") }) {
		t.Fatalf("the runner did not start after the switch: %v", calls)
	}
	if !slices.Contains(sys.mounts, "/dev/vdb -> /mnt/image") || !slices.Contains(sys.mounts, "/dev/vda -> /mnt/writable") {
		t.Errorf("devices mounted: %v", sys.mounts)
	}
	// Everything after the switch lands in the new root.
	newRoot := filepath.Join(root, "mnt/root")
	for _, p := range []string{"etc/hostname", "etc/passwd", "home/runner/.runner"} {
		if _, err := os.Stat(filepath.Join(newRoot, p)); err != nil {
			t.Errorf("%s not in the new root: %v", p, err)
		}
	}
	if fi, err := os.Stat(filepath.Join(newRoot, "tmp")); err != nil || fi.Mode().Perm()|fi.Mode()&os.ModeSticky != 0o777|os.ModeSticky {
		t.Errorf("/tmp in the new root: %v %v", fi, err)
	}
	if fi, err := os.Stat(filepath.Join(root, "mnt/writable/upper")); err != nil || fi.Mode()&os.ModeSticky == 0 || fi.Mode().Perm() != 0o777 {
		t.Errorf("the overlay's upper root does not have the image root's mode 1777: %v %v", fi.Mode(), err)
	}
	for _, d := range []string{"upper", "work"} {
		if _, err := os.Stat(filepath.Join(root, "mnt/writable", d)); err != nil {
			t.Errorf("overlay %s directory: %v", d, err)
		}
	}
}

func TestMissingImageDiskIsReportedToTheHost(t *testing.T) {
	host := newHostServer(t, "vm-token")
	cfg := imageRootConfig(host.URL)
	root := newTestRoot(t, cfg)
	addDisk(t, root, "vda", "fa-writable")
	sys := newFakeSys(t, root)
	con := &syncBuffer{}
	a := &Agent{Root: root, Sys: sys, Console: con, DiskWait: 100 * time.Millisecond}

	a.Boot(context.Background())

	reps := host.got()
	last := reps[len(reps)-1]
	if last.Event != agentproto.EventFailed || !strings.Contains(last.Message, `serial "fa-image"`) {
		t.Fatalf("last report %+v, want failed naming the image disk\nconsole:\n%s", last, con)
	}
	if slices.ContainsFunc(sys.callList(), func(c string) bool { return strings.HasPrefix(c, "start ") || strings.HasPrefix(c, "switch_root") }) {
		t.Fatal("the runner started without its root")
	}
}
