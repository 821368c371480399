package firecracker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nixos-fireactions/nixos-fireactions/vmm"
)

// Names of the boot files inside a jail.
const (
	kernelName = "kernel"
	initrdName = "initramfs"
)

// cpuPeriod is the cgroup v2 cpu.max period: a VM gets vcpus × this of
// CPU time per period.
const cpuPeriod = 100000

// Jailer runs each VM's firecracker through Firecracker's jailer, using
// the jailer's command-line contract: the jailer makes
// <ChrootBaseDir>/<exec file name>/<id>/root, copies firecracker into it,
// creates /dev/kvm and /dev/net/tun there, puts itself in the cgroup
// <cgroup2 mount>/<ParentCgroup>/<id> with the given limits, pivots into
// the chroot, drops to the VM's own uid/gid (UID and GID plus its slot)
// and execs firecracker with --id. The driver links the boot files into
// the chroot first and removes the whole tree, and the cgroup, when the
// VM ends: the jailer leaves that to its caller.
type Jailer struct {
	Binary        string
	ChrootBaseDir string // must exist or be creatable; the jailer requires it
	// UID and GID start the jailed VMMs' ranges: the VM in slot n
	// (vmm.Spec.Slot) runs as UID+n:GID+n, so no two live VMs share a
	// user, and its files and TAP are that user's.
	UID, GID int
	// Slots is how many slots there are (one per address of the VMs'
	// network): the jails' ids are UID and GID plus 0 .. Slots-1. 0
	// means 1<<16, a /16's. Start-up removes a crash's ACL entries of
	// groups in this range only.
	Slots int
	// ParentCgroup is the cgroup v2 directory, relative to the hierarchy's
	// root, the VMs' cgroups are made in.
	ParentCgroup string
	// MemoryOverheadMiB is added to the guest's memory for memory.max:
	// the VMM's own memory.
	MemoryOverheadMiB int
	// MountTable is where the cgroup v2 mount is looked up to remove a
	// VM's cgroup; "" means /proc/mounts (tests use a fake one).
	MountTable string
	// acls lock each shared snapshot file while its ACL changes.
	acls aclLocks
	// share is how its jails are given a template's snapshot files.
	share snapshotShare
}

// jail is one VM's jail.
type jail struct {
	j        *Jailer
	id       string
	execFile string // canonical firecracker path, as the jailer resolves it
	dir      string // <base>/<exec name>/<id>
	uid, gid int    // the VM's own user (set by prepare, from its slot)
	prepared bool   // uid and gid are set: prepare made the jail
	// liveGIDs, for a jail a previous run left (RemoveStaleJails), are
	// the groups of the jails whose monitor runs: its removal takes
	// every other jail group's entry off the template's files it links
	// to, its own gid being unknown when a crash came before its chown.
	liveGIDs map[int]bool
	log      *slog.Logger
}

func (j *Jailer) jailOf(binary, id string) (*jail, error) {
	execFile, jails, err := j.jails(binary)
	if err != nil {
		return nil, err
	}
	return &jail{j: j, id: id, execFile: execFile, dir: filepath.Join(jails, id)}, nil
}

// inRange reports whether gid is in the jails' groups' range (Slots).
func (j *Jailer) inRange(gid int) bool {
	n := j.Slots
	if n <= 0 {
		n = 1 << 16
	}
	return gid >= j.GID && gid < j.GID+n
}

// IDs are the uid and gid VM spec's firecracker runs as: the ranges'
// starts plus the VM's slot.
func (j *Jailer) IDs(spec vmm.Spec) (uid, gid int) {
	return j.UID + spec.Slot, j.GID + spec.Slot
}

// jails is where the jailer makes the jails of binary's VMs
// (<base>/<exec file name>), with binary's canonical path: the jailer
// canonicalizes --exec-file and names the directory after it.
func (j *Jailer) jails(binary string) (execFile, dir string, err error) {
	path, err := exec.LookPath(binary)
	if err != nil {
		return "", "", fmt.Errorf("find firecracker: %w", err)
	}
	canon, err := filepath.EvalSymlinks(path)
	if err != nil {
		return "", "", fmt.Errorf("resolve %s: %w", path, err)
	}
	if canon, err = filepath.Abs(canon); err != nil {
		return "", "", err
	}
	return canon, filepath.Join(j.ChrootBaseDir, filepath.Base(canon)), nil
}

func (jl *jail) root() string { return filepath.Join(jl.dir, "root") }

// driveName is a drive's file in the jail.
func driveName(d vmm.Drive) string { return "drive-" + DriveID(d.ID) }

// paths are spec's files as the jailed VMM sees them.
func (jl *jail) paths(spec vmm.Spec) Paths {
	p := Paths{Kernel: "/" + kernelName, Initrd: "/" + initrdName}
	if spec.Restore != "" {
		p.State, p.Memory = "/"+stateName, "/"+memName
	}
	for _, d := range spec.Drives {
		p.Drives = append(p.Drives, "/"+driveName(d))
	}
	return p
}

// hostPath is where a path inside the jail is on the host.
func (jl *jail) hostPath(inJail string) string { return filepath.Join(jl.root(), inJail) }

// prepare makes the VM's chroot, links its boot files and drives in, and
// gives its TAP to the jail's user (the VM's own: see IDs). The kernel and a read-only drive are
// shared by VMs: hard-linked when anyone may read them, else copied and
// given to the jail's user. The initramfs (it holds the runner's
// credential) and a writable drive are the VM's own: hard-linked and
// given to the jail's user. A copy replaces a hard link across file
// systems, when the jail's file system has room for it (copyIn).
func (j *Jailer) prepare(ctx context.Context, log *slog.Logger, binary string, spec vmm.Spec) (*jail, error) {
	jl, err := j.jailOf(binary, spec.ID)
	if err != nil {
		return nil, err
	}
	jl.uid, jl.gid = j.IDs(spec)
	jl.prepared, jl.log = true, log
	// Traverse-only parents; the root itself is the jail user's, 0700,
	// once the jailer has run.
	if err := os.MkdirAll(filepath.Dir(jl.dir), 0o711); err != nil {
		return nil, fmt.Errorf("make chroot base: %w", err)
	}
	if err := os.Mkdir(jl.dir, 0o711); err != nil {
		return nil, fmt.Errorf("make jail (is vm %s's still there?): %w", spec.ID, err)
	}
	if err := os.Mkdir(jl.root(), 0o700); err != nil {
		_ = jl.remove()
		return nil, fmt.Errorf("make jail root: %w", err)
	}
	if err := jl.linkBoot(ctx, spec); err != nil {
		_ = jl.remove()
		return nil, err
	}
	for _, d := range spec.Drives {
		// The shared read-only image is linked like the kernel; a
		// writable disk is the VM's own, like the initramfs.
		if err := jl.linkIn(d.Path, jl.hostPath(driveName(d)), !d.ReadOnly); err != nil {
			_ = jl.remove()
			return nil, fmt.Errorf("drive %s into the jail: %w", d.ID, err)
		}
	}
	if err := giveTAP(spec.TAP, jl.uid, jl.gid); err != nil {
		_ = jl.remove()
		return nil, err
	}
	return jl, nil
}

// linkBoot links what the VM starts from into the jail: its kernel and
// initramfs, or, for a restore, the template's snapshot (state and
// memory, shared by the template's restores: linked, the jail's group
// let read them; see linkSnapshot) and not the initramfs, whose contents
// are in the memory file already.
func (jl *jail) linkBoot(ctx context.Context, spec vmm.Spec) error {
	if spec.Restore != "" {
		if err := jl.linkSnapshot(ctx, spec.Restore, jl.hostPath(stateName)); err != nil {
			return fmt.Errorf("snapshot into the jail: %w", err)
		}
		if err := jl.linkSnapshot(ctx, snapshotMemory(spec), jl.hostPath(memName)); err != nil {
			return fmt.Errorf("snapshot memory into the jail: %w", err)
		}
		return nil
	}
	if err := jl.linkIn(spec.Kernel, jl.hostPath(kernelName), false); err != nil {
		return fmt.Errorf("kernel into the jail: %w", err)
	}
	if err := jl.linkIn(spec.Initramfs, jl.hostPath(initrdName), true); err != nil {
		return fmt.Errorf("initramfs into the jail: %w", err)
	}
	return nil
}

// giveTAP makes the VM's persistent TAP the jailed user's: a TAP with an
// owner (the orchestrator creates them root's) may only be attached by
// that owner or with CAP_NET_ADMIN, which the jailed firecracker lacks.
// It attaches to the TAP with the flags Firecracker uses and sets owner
// and group.
func giveTAP(name string, uid, gid int) error {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("tap %s to the jail's user: %w", name, err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return fmt.Errorf("tap %s: %w", name, err)
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		return fmt.Errorf("tap %s: attach: %w", name, err)
	}
	if err := unix.IoctlSetInt(fd, unix.TUNSETOWNER, uid); err != nil {
		return fmt.Errorf("tap %s: set owner %d: %w", name, uid, err)
	}
	if err := unix.IoctlSetInt(fd, unix.TUNSETGROUP, gid); err != nil {
		return fmt.Errorf("tap %s: set group %d: %w", name, gid, err)
	}
	return nil
}

// linkIn puts src into the jail at dst; own gives it to the VM's user.
// Where it cannot hard-link, the jail gets a copy, its user's, when the
// file system has room for it (copyIn).
func (jl *jail) linkIn(src, dst string, own bool) error {
	fi, err := os.Stat(src)
	if err != nil {
		return err
	}
	worldReadable := fi.Mode().Perm()&0o004 != 0
	if own || worldReadable {
		err = os.Link(src, dst)
		if err == nil {
			if own {
				return os.Chown(dst, jl.uid, jl.gid)
			}
			return nil
		}
		if !errors.Is(err, syscall.EXDEV) && !errors.Is(err, fs.ErrPermission) {
			return err
		}
	}
	return jl.copyIn(src, dst, bootCopyMargin, "")
}

// linkSnapshot hard-links a template's snapshot file src into the jail
// at dst and lets the jail's group read it by an ACL entry (acl.go),
// which remove takes back. Across file systems, or on one without ACLs,
// the jail gets a copy of its own, its user's, when there is room for
// it (copySnapshot).
func (jl *jail) linkSnapshot(ctx context.Context, src, dst string) error {
	why := "the template's files are on another file system than the jails"
	err := os.Link(src, dst)
	if err == nil {
		if err = jl.j.share.grantRead(ctx, &jl.j.acls, dst, jl.gid); err == nil {
			return nil
		}
		_ = os.Remove(dst)
		if !errors.Is(err, unix.EOPNOTSUPP) {
			return err
		}
		why = "the file system has no ACLs (POSIX ACL support off)"
	} else if !errors.Is(err, syscall.EXDEV) {
		return err
	}
	return jl.copySnapshot(src, dst, why)
}

// unlinkSnapshot takes back what linkSnapshot gave the jail's group,
// gid, on the template's files: the jail's links to them.
func (jl *jail) unlinkSnapshot(gid int) error {
	return jl.dropSnapshotGroups(func(g int) bool { return g == gid })
}

// dropSnapshotGroups removes the entries of the groups drop reports
// from the ACLs of the template's files the jail links to.
func (jl *jail) dropSnapshotGroups(drop func(gid int) bool) error {
	var errs []error
	for _, name := range []string{stateName, memName} {
		p := jl.hostPath(name)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG || st.Nlink < 2 {
			continue // none, the jail's own copy, or not what was linked
		}
		// No caller's context: the wait is for this process's other
		// changes of the file's ACL, an xattr read and write each.
		if err := jl.j.share.dropRead(context.Background(), &jl.j.acls, p, drop); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func copyFile(src, dst string, perm fs.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, perm)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// args is the jailer's command line for spec, with the VM's own uid and
// gid; firecracker gets the API socket path after "--" (the jailer itself
// passes --id).
func (jl *jail) args(spec vmm.Spec, socket string) []string {
	j := jl.j
	args := []string{
		"--id", spec.ID,
		"--exec-file", jl.execFile,
		"--uid", strconv.Itoa(jl.uid),
		"--gid", strconv.Itoa(jl.gid),
		"--chroot-base-dir", j.ChrootBaseDir,
		"--cgroup-version", "2",
	}
	if j.ParentCgroup != "" {
		args = append(args, "--parent-cgroup", j.ParentCgroup)
	}
	for _, c := range CgroupLimits(spec, j.MemoryOverheadMiB) {
		args = append(args, "--cgroup", c)
	}
	return append(args, "--", "--api-sock", socket)
}

// CgroupLimits are the VM's cgroup v2 settings, from its shape: vCPUs
// worth of CPU time per period, and the guest's memory plus overhead.
func CgroupLimits(spec vmm.Spec, overheadMiB int) []string {
	return []string{
		fmt.Sprintf("cpu.max=%d %d", spec.VCPUs*cpuPeriod, cpuPeriod),
		fmt.Sprintf("memory.max=%d", int64(spec.MemoryMiB+overheadMiB)<<20),
	}
}

// remove deletes the jail tree and the VM's cgroup; both may be gone.
// A jail whose group's entry on the template's files could not be
// dropped is kept, emptied but for its root (whose group names the
// jail's) and its links to those files: they are what the start-up
// sweep (RemoveStaleJails) finds the entry by, so it tries again;
// without them the entry would outlive the jail for good. Its cgroup,
// the VM's disks and whatever else its job left in it go at once
// (TestAJailWhoseACLEntryCouldNotBeDroppedIsKept), and it moves aside
// (keepAside), leaving its VM id's jail to the next (a failed restore's
// cold boot has the same id).
func (jl *jail) remove() error {
	gid := jl.gid
	if !jl.prepared {
		// A jail a previous run left: its root is its user's once the
		// jailer ran, else it has no snapshot linked for that user.
		var st unix.Stat_t
		if unix.Stat(jl.root(), &st) == nil {
			gid = int(st.Gid)
		}
	}
	var aclErr error
	if jl.liveGIDs != nil {
		aclErr = jl.dropSnapshotGroups(func(g int) bool { return jl.j.inRange(g) && !jl.liveGIDs[g] })
	} else {
		aclErr = jl.unlinkSnapshot(gid)
	}
	var err error
	if aclErr != nil {
		err = fmt.Errorf("kept for the next start, its ACL entries on a template's files not dropped: %w", aclErr)
		// The sweep needs the root (its group) and the snapshot links;
		// the VM's disks and whatever else its job left go now.
		err = errors.Join(err, jl.emptyBut(stateName, memName), jl.keepAside())
	} else {
		err = os.RemoveAll(jl.dir)
	}
	if cg := jl.j.cgroupDir(jl.execFile, jl.id); cg != "" {
		err = errors.Join(err, removeCgroup(cg))
	}
	if err != nil {
		return fmt.Errorf("remove jail of vm %s: %w", jl.id, err)
	}
	return nil
}

// cgroupDir is the VM's cgroup, or "" without a cgroup v2 mount.
func (j *Jailer) cgroupDir(execFile, id string) string {
	mount := cgroup2Mount(j.MountTable)
	if mount == "" {
		return ""
	}
	parent := j.ParentCgroup
	if parent == "" {
		parent = filepath.Base(execFile) // the jailer's default
	}
	return filepath.Join(mount, parent, id)
}

// cgroup2Magic is the cgroup v2 file system's statfs type.
const cgroup2Magic = 0x63677270

// removeCgroup removes an empty cgroup, waiting briefly for the exited
// process to leave it. A cgroup's interface files go with its directory;
// a stand-in hierarchy that is a plain directory tree (tests) has real
// files, removed with it.
func removeCgroup(dir string) error {
	var err error
	for i := 0; i < 50; i++ {
		err = syscall.Rmdir(dir)
		if err == nil || errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		var st syscall.Statfs_t
		if errors.Is(err, syscall.ENOTEMPTY) && syscall.Statfs(dir, &st) == nil && st.Type != cgroup2Magic {
			return os.RemoveAll(dir)
		}
		if !errors.Is(err, syscall.EBUSY) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("remove cgroup %s: %w", dir, err)
}

// keptPrefix starts the name a kept jail moves to (keepAside): never a
// VM's id (checkSpec), so no VM's jail collides with a kept one, and
// the start-up sweep, which takes every jail no monitor runs in, finds
// it.
const keptPrefix = "kept-"

// maxKept bounds the kept jails of one VM id keepAside looks past for a
// free name: the start-up sweep removes them.
const maxKept = 1000

// keepAside moves a jail kept for its ACL entries to a free name of its
// own beside it: keptPrefix, its id (cut to fit a VM id's 64 bytes) and a
// number. A jail kept before (a stale one the sweep kept again) stays
// where it is.
func (jl *jail) keepAside() error {
	name := filepath.Base(jl.dir)
	if strings.HasPrefix(name, keptPrefix) {
		return nil
	}
	for n := 1; n <= maxKept; n++ {
		suffix := "-" + strconv.Itoa(n)
		to := filepath.Join(filepath.Dir(jl.dir), keptPrefix+name[:min(len(name), 64-len(keptPrefix)-len(suffix))]+suffix)
		if _, err := os.Lstat(to); err == nil {
			continue
		} else if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("move the kept jail aside: %w", err)
		}
		if err := os.Rename(jl.dir, to); err != nil {
			return fmt.Errorf("move the kept jail aside: %w", err)
		}
		return nil
	}
	return fmt.Errorf("move the kept jail aside: %d jails of vm %s kept already", maxKept, jl.id)
}

// emptyBut removes everything in the jail's root but the entries named
// keep.
func (jl *jail) emptyBut(keep ...string) error {
	entries, err := os.ReadDir(jl.root())
	if err != nil {
		return fmt.Errorf("empty the kept jail: %w", err)
	}
	var errs []error
	for _, e := range entries {
		if !slices.Contains(keep, e.Name()) {
			errs = append(errs, os.RemoveAll(filepath.Join(jl.root(), e.Name())))
		}
	}
	return errors.Join(errs...)
}
