package firecracker

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nixos-fireactions/nixos-fireactions/internal/double/firecrackerdouble"
	"github.com/nixos-fireactions/nixos-fireactions/internal/hosttest"
	"github.com/nixos-fireactions/nixos-fireactions/vmm"
)

// TestDriveSerialsNamedToTheGuest: Firecracker gives each drive a serial
// made from the file it opens (not the drive_id, and nothing the driver
// can set), so the driver names each drive's serial on the kernel command
// line by the drive's id, for the guest agent to find its disks by. The
// serial is the jailed file's, whether the jail hard-linked the drive's
// file or had to copy it (a new inode), and it is what the double, which
// holds Firecracker's rule, gives the guest.
func TestDriveSerialsNamedToTheGuest(t *testing.T) {
	hosttest.RequireRoot(t, "the jailer chowns, mknods and drops privileges; TAPs")
	b := buildDouble(t)
	spec, record := doubleSpec(t, []byte("i"))
	base := jailBase(t)
	_, mounts := fakeCgroups(t, base)
	t.Setenv("FCDOUBLE_PROC_MOUNTS", mounts)
	// A shared image anyone may read (hard-linked), one only root may
	// read (copied for the jail's user) and the VM's writable disk.
	files := map[string]os.FileMode{"image.erofs": 0o644, "private.erofs": 0o600, "disk.ext4": 0o600}
	for f, mode := range files {
		if err := os.WriteFile(filepath.Join(spec.Dir, f), make([]byte, 4096), mode); err != nil {
			t.Fatal(err)
		}
	}
	spec.Drives = []vmm.Drive{
		{ID: "fa-image", Path: filepath.Join(spec.Dir, "image.erofs"), ReadOnly: true},
		{ID: "fa-private", Path: filepath.Join(spec.Dir, "private.erofs"), ReadOnly: true},
		{ID: "fa-writable", Path: filepath.Join(spec.Dir, "disk.ext4")},
	}
	d := &Driver{Binary: b.Firecracker, Jailer: &Jailer{Binary: b.Jailer, ChrootBaseDir: base, UID: jailUID, GID: jailGID, MountTable: mounts}}
	m, err := d.Start(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = m.Kill(ctx)
	}()

	var bootArgs string
	for _, r := range readRecord(t, record) {
		if r.Path == "/boot-source" {
			var b BootSource
			if err := json.Unmarshal([]byte(r.Body), &b); err != nil {
				t.Fatal(err)
			}
			bootArgs = b.BootArgs
		}
	}
	root := filepath.Join(base, "firecracker", spec.ID, "root")
	for _, dr := range spec.Drives {
		var st unix.Stat_t
		if err := unix.Stat(filepath.Join(root, driveName(dr)), &st); err != nil {
			t.Fatal(err)
		}
		serial := firecrackerdouble.BlockID(&st) // what the guest reads, by Firecracker's rule
		if want := " fireactions.serial." + dr.ID + "=" + serial; !strings.Contains(bootArgs+" ", want+" ") {
			t.Errorf("boot_args %q do not name drive %s's serial %s", bootArgs, dr.ID, serial)
		}
	}
	var orig, jailed unix.Stat_t
	unix.Stat(filepath.Join(spec.Dir, "private.erofs"), &orig)
	unix.Stat(filepath.Join(root, "drive-fa_private"), &jailed)
	if orig.Ino == jailed.Ino || strings.Contains(bootArgs, "="+firecrackerdouble.BlockID(&orig)+" ") {
		t.Errorf("the private image was not copied into the jail, or its serial is the original file's: %q", bootArgs)
	}
}

// TestDrivesTheGuestCannotTellApartAreRefused: two drives backed by one
// file would show the guest one serial; Start refuses them rather than
// let the guest take one disk for the other.
func TestDrivesTheGuestCannotTellApartAreRefused(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "image.erofs")
	os.WriteFile(img, make([]byte, 4096), 0o644)
	spec := testSpec
	spec.Dir, spec.ConsoleLog, spec.Kernel, spec.Initramfs = dir, filepath.Join(dir, "console.log"), img, img
	spec.Drives = []vmm.Drive{{ID: "fa-image", Path: img, ReadOnly: true}, {ID: "fa-again", Path: img, ReadOnly: true}}
	_, err := (&Driver{Binary: "/nonexistent/firecracker"}).Start(context.Background(), spec)
	if err == nil || !strings.Contains(err.Error(), "would show the guest one serial") {
		t.Fatalf("Start = %v, want drives fa-image and fa-again refused for one serial", err)
	}
}
