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
	"github.com/nixos-fireactions/nixos-fireactions/internal/hosttest"
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
	con := &hosttest.SyncBuffer{}
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
	con := &hosttest.SyncBuffer{}
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

// firecrackerCmdline is a kernel command line as the Firecracker driver
// writes it for an image root: the serial Firecracker gives each drive
// (made from its backing file, not its id) named by the drive's id.
const firecrackerCmdline = "console=ttyS0 reboot=k panic=1 pci=off fireactions.serial.fa-image=2049013107564 fireactions.serial.fa-writable=20490131075671\n"

// TestImageRootOnFirecracker: Firecracker gives each disk a serial made
// from its backing file's device and inode numbers, never the drive id,
// so the agent finds its disks by the serials the kernel command line
// names for the drive ids; the disks' order does not matter.
func TestImageRootOnFirecracker(t *testing.T) {
	host := newHostServer(t, "vm-token")
	cfg := imageRootConfig(host.URL)
	root := newTestRoot(t, cfg)
	must(t, os.MkdirAll(filepath.Join(root, "proc"), 0o755))
	must(t, os.WriteFile(filepath.Join(root, "proc/cmdline"), []byte(firecrackerCmdline), 0o444))
	addDisk(t, root, "vda", "20490131075671")
	addDisk(t, root, "vdb", "2049013107564")
	sys := newFakeSys(t, root)
	con := &hosttest.SyncBuffer{}
	a := &Agent{Root: root, Sys: sys, Console: con, DiskWait: time.Second}

	a.Boot(context.Background())

	if !slices.Contains(sys.mounts, "/dev/vdb -> /mnt/image") || !slices.Contains(sys.mounts, "/dev/vda -> /mnt/writable") {
		t.Fatalf("devices mounted: %v, want vdb as the image and vda as the writable disk\nconsole:\n%s", sys.mounts, con)
	}
	if !slices.ContainsFunc(sys.callList(), func(c string) bool { return strings.HasPrefix(c, "start ") }) {
		t.Fatalf("the runner did not start: %v\nconsole:\n%s", sys.callList(), con)
	}
}

// TestDiskSerialsAreExact: a disk is taken only for a serial named
// exactly, never for another disk's serial that merely starts alike or
// for the disk's place; a serial two disks report is refused rather than
// guessed between.
func TestDiskSerialsAreExact(t *testing.T) {
	for _, c := range []struct {
		name    string
		disks   [][2]string // name, serial
		cmdline string
		want    string // the image disk's node, or the error's text
	}{
		{"a prefix is not the serial", [][2]string{{"vda", "20490131075640"}, {"vdb", "2049013107564"}}, firecrackerCmdline, "/dev/vdb"},
		{"no disk with the named serial", [][2]string{{"vda", "111"}, {"vdb", "222"}}, firecrackerCmdline, `no block device with serial "fa-image"`},
		{"the serial twice", [][2]string{{"vda", "2049013107564"}, {"vdb", "2049013107564"}}, firecrackerCmdline, "both report serial"},
		{"a parameter for another drive id", [][2]string{{"vda", "2049013107564"}}, "fireactions.serial.fa-imagex=2049013107564", `no block device with serial "fa-image"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			root := t.TempDir()
			must(t, os.MkdirAll(filepath.Join(root, "proc"), 0o755))
			must(t, os.WriteFile(filepath.Join(root, "proc/cmdline"), []byte(c.cmdline), 0o444))
			for _, d := range c.disks {
				addDisk(t, root, d[0], d[1])
			}
			a := &Agent{Root: root, DiskWait: 100 * time.Millisecond}
			dev, err := a.findDisk(context.Background(), agentproto.Disk{Serial: "fa-image", Device: "/dev/vda"})
			got := dev
			if err != nil {
				got = err.Error()
			} else {
				got = "/" + filepath.ToSlash(strings.TrimPrefix(dev, root+"/"))
			}
			if !strings.Contains(got, c.want) {
				t.Errorf("findDisk = %q, want %q", got, c.want)
			}
		})
	}
}
