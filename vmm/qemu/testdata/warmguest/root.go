package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
	"golang.org/x/sys/unix"
)

// rootProbe is an image root's restore, as the agent mounts it once its
// identity came (guest/agent's switchRoot): the image drive read-only,
// the VM's writable drive, an overlay of the two. It writes a file named
// for the VM into the overlay's root, lists that root and reads the
// image's /etc/marker, prints them, and unmounts (so the writable disk
// holds the file when QEMU ends). The template never touched either
// drive beyond the kernel's probe of them.
func rootProbe(say func(string, ...any), vmID string, r agentproto.Root) {
	img, err := diskBySerial(r.Image.Serial)
	if err != nil {
		say("root: %v", err)
		return
	}
	wr, err := diskBySerial(r.Writable.Serial)
	if err != nil {
		say("root: %v", err)
		return
	}
	for _, d := range []string{"/mnt/image", "/mnt/writable", "/mnt/root"} {
		os.MkdirAll(d, 0o755)
	}
	if err := unix.Mount(img, "/mnt/image", r.FSType, unix.MS_RDONLY, ""); err != nil {
		say("root: mount image %s: %v", img, err)
		return
	}
	if err := unix.Mount(wr, "/mnt/writable", "ext4", unix.MS_NOATIME, ""); err != nil {
		say("root: mount writable %s: %v", wr, err)
		return
	}
	os.MkdirAll("/mnt/writable/upper", 0o755)
	os.MkdirAll("/mnt/writable/work", 0o755)
	if err := unix.Mount("overlay", "/mnt/root", "overlay", 0, "lowerdir=/mnt/image,upperdir=/mnt/writable/upper,workdir=/mnt/writable/work"); err != nil {
		say("root: overlay: %v", err)
		return
	}
	if err := os.WriteFile("/mnt/root/own-"+vmID, []byte(vmID), 0o644); err != nil {
		say("root: write: %v", err)
	}
	entries, _ := os.ReadDir("/mnt/root")
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	slices.Sort(names)
	marker, _ := os.ReadFile("/mnt/root/etc/marker")
	for _, m := range []string{"/mnt/root", "/mnt/writable", "/mnt/image"} {
		if err := unix.Unmount(m, 0); err != nil {
			say("root: unmount %s: %v", m, err)
		}
	}
	say("root vm=%s files=%s marker=%s", vmID, strings.Join(names, ","), strings.TrimSpace(string(marker)))
}

// diskBySerial is the /dev node of the block device whose serial is s,
// waiting up to 5 s for it.
func diskBySerial(s string) (string, error) {
	for i := 0; i < 250; i++ {
		names, _ := filepath.Glob("/sys/block/*/serial")
		for _, n := range names {
			if b, err := os.ReadFile(n); err == nil && strings.TrimSpace(string(b)) == s {
				return "/dev/" + filepath.Base(filepath.Dir(n)), nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return "", fmt.Errorf("no block device with serial %q", s)
}
