package agent

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
	"golang.org/x/sys/unix"
)

// Where the agent mounts the disks of an image root, inside the initramfs.
// Once the root is switched they are out of the guest's sight: a job
// cannot reach the writable disk's raw upper layer or the image.
const (
	imageMount    = "/mnt/image"
	writableMount = "/mnt/writable"
	newRootMount  = "/mnt/root"
)

// movedMounts are the kernel file systems that follow the root: /dev (with
// devpts and shm below it), /proc, /sys and /run. /tmp stays behind: on an
// image root it lives on the writable disk, not in memory.
var movedMounts = []string{"/dev", "/proc", "/sys", "/run"}

// DefaultDiskWait bounds the wait for a block device to appear after its
// driver is loaded.
const DefaultDiskWait = 10 * time.Second

// switchRoot mounts the image read-only, the VM's writable disk, an
// overlay of the two, moves the kernel file systems into it and makes it
// the root, as switch_root does: the initramfs cannot be unmounted, so the
// overlay is moved onto / and the agent chroots into it.
//
// With docker set (the pool asks for Docker), Docker's data directory
// goes on the writable disk too (mountDockerData). Errors name the image.
func (a *Agent) switchRoot(ctx context.Context, r agentproto.Root, docker bool) error {
	if err := a.switchRootOf(ctx, r, docker); err != nil {
		return fmt.Errorf("image %s: %w", imageName(r), err)
	}
	return nil
}

// imageName is how errors name the image of r.
func imageName(r agentproto.Root) string {
	if r.Name == "" {
		return "(unnamed)"
	}
	return r.Name
}

func (a *Agent) switchRootOf(ctx context.Context, r agentproto.Root, docker bool) error {
	start := a.Sys.Uptime()
	image, err := a.findDisk(ctx, r.Image)
	if err != nil {
		return fmt.Errorf("image disk: %w", err)
	}
	writable, err := a.findDisk(ctx, r.Writable)
	if err != nil {
		return fmt.Errorf("writable disk: %w", err)
	}
	for _, d := range []string{imageMount, writableMount, newRootMount} {
		if err := os.MkdirAll(a.path(d), 0o755); err != nil {
			return fmt.Errorf("switching root: %w", err)
		}
	}
	if err := a.Sys.Mount(image, a.path(imageMount), r.FSType, unix.MS_RDONLY, ""); err != nil {
		return fmt.Errorf("mounting the image (%s on %s): %w", r.FSType, image, err)
	}
	// noinit_itable: the host formatted the disk lazily, and zeroing its
	// inode tables in the background would only fill the sparse file.
	if err := a.Sys.Mount(writable, a.path(writableMount), "ext4", unix.MS_NOATIME, "noinit_itable"); err != nil {
		return fmt.Errorf("mounting the writable disk (%s): %w", writable, err)
	}
	upper, work := a.path(writableMount+"/upper"), a.path(writableMount+"/work")
	for _, d := range []string{upper, work} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("switching root: %w", err)
		}
	}
	// The overlay's root directory takes its owner and mode from the upper
	// directory: make them the image's, so / is what the image says.
	if err := a.copyOwnerAndMode(a.path(imageMount), upper); err != nil {
		return fmt.Errorf("switching root: %w", err)
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", a.path(imageMount), upper, work)
	newRoot := a.path(newRootMount)
	if err := a.Sys.Mount("overlay", newRoot, "overlay", 0, opts); err != nil {
		return fmt.Errorf("mounting the overlay: %w", err)
	}
	if docker {
		if err := a.mountDockerData(newRoot); err != nil {
			return err
		}
	}
	for _, m := range movedMounts {
		target := filepath.Join(newRoot, m)
		if err := os.MkdirAll(target, 0o755); err != nil {
			return fmt.Errorf("switching root: %w", err)
		}
		if err := a.Sys.Mount(a.path(m), target, "", unix.MS_MOVE, ""); err != nil {
			return fmt.Errorf("moving %s into the new root: %w", m, err)
		}
	}
	if err := ensureTmp(filepath.Join(newRoot, "tmp")); err != nil {
		return err
	}
	root, err := a.Sys.SwitchRoot(newRoot)
	if err != nil {
		return fmt.Errorf("switching root: %w", err)
	}
	a.Root, a.image = root, imageName(r)
	a.logf("root switched to the image (%s %s, writable %s) in %.3fs", r.FSType, image, writable, (a.Sys.Uptime() - start).Seconds())
	return nil
}

// copyOwnerAndMode gives dst the owner and permission bits of src.
func (a *Agent) copyOwnerAndMode(src, dst string) error {
	var st unix.Stat_t
	if err := unix.Stat(src, &st); err != nil {
		return err
	}
	if err := a.Sys.Chown(dst, int(st.Uid), int(st.Gid)); err != nil {
		return err
	}
	return unix.Chmod(dst, st.Mode&0o7777)
}

// path is guest path p in the agent's view of the file system.
func (a *Agent) path(p string) string { return filepath.Join(a.Root, p) }

// ensureTmp makes /tmp exist with mode 1777: images may lack it.
func ensureTmp(p string) error {
	fi, err := os.Lstat(p)
	if err == nil && fi.IsDir() {
		return nil
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("/tmp: %w", err)
	}
	if err := os.Mkdir(p, 0o1777); err != nil {
		return fmt.Errorf("/tmp: %w", err)
	}
	return unix.Chmod(p, 0o1777)
}

// findDisk waits for the block device d names and returns its node: the
// virtio disk whose serial is d.Serial or the one the kernel command line
// names for it (agentproto.SerialParam: Firecracker's serials), or
// d.Device when no disk reports a serial (a monitor without serials).
// Serials come from the monitor and the command line from the host: what
// the disks hold never decides.
func (a *Agent) findDisk(ctx context.Context, d agentproto.Disk) (string, error) {
	wait := a.DiskWait
	if wait == 0 {
		wait = DefaultDiskWait
	}
	wanted := []string{d.Serial}
	named := ""
	if s := a.cmdlineSerials()[d.Serial]; s != "" && d.Serial != "" {
		named = fmt.Sprintf(" or %q", s)
		wanted = append(wanted, s)
	}
	deadline := time.Now().Add(wait)
	for {
		dev, serials, err := a.scanDisks(wanted)
		switch {
		case err != nil:
			return "", err
		case dev != "":
			return dev, nil
		case d.Device != "" && serials == 0:
			if _, err := os.Stat(a.path(d.Device)); err == nil {
				return a.path(d.Device), nil
			}
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("no block device with serial %q%s (or %q) after %s: is virtio_blk in kernel_modules?", d.Serial, named, d.Device, wait)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// cmdlineSerials are the serials the kernel command line names for drive
// ids: fireactions.serial.<id>=<serial>.
func (a *Agent) cmdlineSerials() map[string]string {
	b, _ := os.ReadFile(a.path("/proc/cmdline"))
	out := map[string]string{}
	for _, f := range strings.Fields(string(b)) {
		k, v, ok := strings.Cut(f, "=")
		if id, isSerial := strings.CutPrefix(k, agentproto.SerialParam); ok && isSerial && id != "" && v != "" {
			out[id] = v
		}
	}
	return out
}

// scanDisks finds the block device whose serial is one of wanted (empty
// ones never match), and counts the devices that report a serial. Two
// devices that match are an error: the agent does not guess.
func (a *Agent) scanDisks(wanted []string) (dev string, serials int, err error) {
	entries, _ := os.ReadDir(a.path("/sys/block"))
	found := ""
	for _, e := range entries {
		b, err := os.ReadFile(a.path("/sys/block/" + e.Name() + "/serial"))
		s := strings.TrimSpace(string(b))
		if err != nil || s == "" {
			continue
		}
		serials++
		if !slices.Contains(wanted, s) {
			continue
		}
		if found != "" {
			return "", serials, fmt.Errorf("block devices %s and %s both report serial %q", found, e.Name(), s)
		}
		found = e.Name()
		node := a.path("/dev/" + e.Name())
		if _, err := os.Stat(node); err == nil {
			dev = node
		}
	}
	return dev, serials, nil
}
