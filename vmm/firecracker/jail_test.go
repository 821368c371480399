package firecracker

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/internal/hosttest"
	"github.com/nixos-fireactions/nixos-fireactions/vmm"
)

// The jailed VMM's user, unused on test hosts.
const jailUID, jailGID = 64123, 64124

// fakeCgroups is a stand-in cgroup v2 hierarchy (this host's cgroup v2
// offers no cpu or memory controller): a directory with the controller
// list and subtree control files, and a mount table naming it.
func fakeCgroups(t *testing.T, dir string) (root, mounts string) {
	t.Helper()
	root = filepath.Join(dir, "cgroup")
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(root, "cgroup.controllers"), []byte("cpuset cpu io memory pids\n"), 0o644)
	os.WriteFile(filepath.Join(root, "cgroup.subtree_control"), nil, 0o644)
	mounts = filepath.Join(dir, "mounts")
	os.WriteFile(mounts, []byte(fmt.Sprintf("proc /proc proc rw 0 0\ncgroup2 %s cgroup2 rw,nosuid 0 0\n", root)), 0o644)
	return root, mounts
}

// jailBase is a chroot base directory the jailed user can traverse (the
// double is not really chrooted: QEMU opens the files by host path).
func jailBase(t *testing.T) string {
	t.Helper()
	base, err := os.MkdirTemp("", "fcjail")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(base, 0o711)
	t.Cleanup(func() { os.RemoveAll(base) })
	return base
}

func statOf(t *testing.T, path string) *syscall.Stat_t {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return fi.Sys().(*syscall.Stat_t)
}

// processIDs returns the real uid and gid of pid.
func processIDs(t *testing.T, pid int) (uid, gid int) {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) >= 2 && f[0] == "Uid:" {
			uid, _ = strconv.Atoi(f[1])
		}
		if len(f) >= 2 && f[0] == "Gid:" {
			gid, _ = strconv.Atoi(f[1])
		}
	}
	return uid, gid
}

// TestJailedBoot runs the driver with the jailer double, the MMDS on and
// a real guest: while the VM runs, its chroot holds firecracker,
// /dev/kvm, /dev/net/tun, the API socket and the kernel (hard-linked) but
// no initramfs (the VMM read it at InstanceStart: Start removed the
// jail's link and emptied the file), all of it the jailed
// user's, which is the VM's own (the ranges' starts plus its slot); the
// VMM runs as that user, in its cgroup with limits from the VM's shape.
// When the guest ends, nothing is left: no process, chroot or cgroup.
func TestJailedBoot(t *testing.T) {
	hosttest.RequireRoot(t, "the jailer chowns, mknods and drops privileges")
	b := buildDouble(t)
	// The guest waits 3s before its reset: time to look at the jail.
	spec := bootSpec(t, "jail1", "reset")
	spec.Cmdline += " guestsleep=3"
	spec.Slot = 3
	spec.Metadata = map[string]string{"vm_id": spec.ID, "pool": "p1", "host_id": "h1"}
	vmUID, vmGID := jailUID+spec.Slot, jailGID+spec.Slot
	// An image shared by VMs (world-readable, read-only) and the VM's own
	// writable disk.
	image, disk := filepath.Join(spec.Dir, "image.erofs"), filepath.Join(spec.Dir, "disk.ext4")
	os.WriteFile(image, make([]byte, 1<<20), 0o644)
	os.WriteFile(disk, make([]byte, 1<<20), 0o600)
	spec.Drives = []vmm.Drive{{ID: "fa-image", Path: image, ReadOnly: true}, {ID: "fa-disk", Path: disk}}
	base := jailBase(t)
	cgRoot, mounts := fakeCgroups(t, base)
	t.Setenv("FCDOUBLE_PROC_MOUNTS", mounts)
	record := filepath.Join(spec.Dir, "record.jsonl")
	t.Setenv("FCDOUBLE_RECORD", record)
	d := &Driver{Binary: b.Firecracker, MMDS: true, Jailer: &Jailer{
		Binary: b.Jailer, ChrootBaseDir: base, UID: jailUID, GID: jailGID,
		ParentCgroup: "fireactions", MemoryOverheadMiB: 64, MountTable: mounts,
	}}
	m, err := d.Start(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	jail := filepath.Join(base, "firecracker", spec.ID)
	root := filepath.Join(jail, "root")
	t.Run("the chroot tree", func(t *testing.T) {
		for _, c := range []struct {
			path  string
			mode  os.FileMode // type and permission bits
			owner int         // uid; the gid goes with it
		}{
			{"", os.ModeDir | 0o700, vmUID},
			{"firecracker", 0o755, 0}, // copied in by the jailer, not given away
			{"dev", os.ModeDir | 0o700, vmUID},
			{"dev/net", os.ModeDir | 0o700, vmUID},
			{"dev/net/tun", os.ModeDevice | os.ModeCharDevice | 0o600, vmUID},
			{"dev/kvm", os.ModeDevice | os.ModeCharDevice | 0o600, vmUID},
			{"run", os.ModeDir | 0o700, vmUID},
			{"run/fc.sock", os.ModeSocket, vmUID}, // made by the VMM
			{"drive-fa_disk", 0o600, vmUID},
			{"drive-fa_image", 0o644, 0}, // shared: linked, left to root
		} {
			p := filepath.Join(root, c.path)
			fi, err := os.Lstat(p)
			if err != nil {
				t.Errorf("%s: %v", c.path, err)
				continue
			}
			mode := fi.Mode() & (os.ModeType | os.ModeCharDevice | os.ModePerm)
			if c.mode&os.ModeSocket != 0 {
				mode &= os.ModeType // the socket's permission bits are the umask's
			}
			if mode != c.mode {
				t.Errorf("%s: mode %v, want %v", c.path, mode, c.mode)
			}
			st := fi.Sys().(*syscall.Stat_t)
			wantGID := 0
			if c.owner == vmUID {
				wantGID = vmGID
			}
			if int(st.Uid) != c.owner || int(st.Gid) != wantGID {
				t.Errorf("%s: owner %d:%d, want %d:%d", c.path, st.Uid, st.Gid, c.owner, wantGID)
			}
		}
		if st := statOf(t, filepath.Join(root, "dev/kvm")); st.Rdev != uint64(10<<8|232) {
			t.Errorf("/dev/kvm is device %#x, want 10:232", st.Rdev)
		}
		if st := statOf(t, filepath.Join(root, "dev/net/tun")); st.Rdev != uint64(10<<8|200) {
			t.Errorf("/dev/net/tun is device %#x, want 10:200", st.Rdev)
		}
		k, src := statOf(t, filepath.Join(root, "kernel")), statOf(t, spec.Kernel)
		if k.Ino != src.Ino || k.Uid != 0 {
			t.Errorf("the kernel is not a hard link of the shared kernel left to root (inode %d vs %d, uid %d)", k.Ino, src.Ino, k.Uid)
		}
		if _, err := os.Lstat(filepath.Join(root, "initramfs")); !os.IsNotExist(err) {
			t.Errorf("the jail's initramfs is there after Start (%v)", err)
		}
		if fi, err := os.Stat(spec.Initramfs); err != nil {
			t.Error(err)
		} else if fi.Size() != 0 {
			t.Errorf("the booted initramfs holds %d bytes after Start, want none", fi.Size())
		}
		for jailed, host := range map[string]string{"drive-fa_image": image, "drive-fa_disk": disk} {
			if statOf(t, filepath.Join(root, jailed)).Ino != statOf(t, host).Ino {
				t.Errorf("%s was copied, not hard-linked", jailed)
			}
		}
	})
	t.Run("the VMM's user and cgroup", func(t *testing.T) {
		if uid, gid := processIDs(t, m.PID()); uid != vmUID || gid != vmGID {
			t.Errorf("the VMM runs as %d:%d, want %d:%d", uid, gid, vmUID, vmGID)
		}
		cg := filepath.Join(cgRoot, "fireactions", spec.ID)
		for file, want := range map[string]string{
			"cpu.max":      "100000 100000",
			"memory.max":   strconv.Itoa((256 + 64) << 20),
			"cgroup.procs": strconv.Itoa(m.PID()),
		} {
			got, err := os.ReadFile(filepath.Join(cg, file))
			if err != nil || strings.TrimSpace(string(got)) != want {
				t.Errorf("%s = %q (%v), want %q", file, got, err, want)
			}
		}
	})

	waitDone(t, m, 90*time.Second)
	if m.Err() != nil {
		t.Fatalf("the jailed VMM ended with %v; console:\n%s", m.Err(), readFile(spec.ConsoleLog))
	}
	if c := readFile(spec.ConsoleLog); !strings.Contains(c, `guestinit: up`) {
		t.Fatalf("the guest did not run in the jail; console:\n%s", c)
	}
	assertAllAccepted(t, readRecord(t, record), spec, true)
	for _, left := range []string{jail, filepath.Join(cgRoot, "fireactions", spec.ID)} {
		if _, err := os.Stat(left); !os.IsNotExist(err) {
			t.Errorf("%s left after the VM ended (%v)", left, err)
		}
	}
	if !processGone(spec.ID) || len(qemuOf(spec.ID)) != 0 {
		t.Error("a process of the VM is still running")
	}
}

func readFile(p string) string {
	b, _ := os.ReadFile(p)
	return string(b)
}

// TestJailerRefusalsReachTheCaller: a jailer that refuses (here: a cgroup
// controller the hierarchy does not offer, as on a host whose cgroup v2
// has no cpu controller) fails Start with the jailer's own words, and the
// jail is removed.
func TestJailerRefusalsReachTheCaller(t *testing.T) {
	hosttest.RequireRoot(t, "the jailer chowns and mknods")
	b := buildDouble(t)
	dir := t.TempDir()
	base := jailBase(t)
	cgRoot, mounts := fakeCgroups(t, base)
	os.WriteFile(filepath.Join(cgRoot, "cgroup.controllers"), []byte("hugetlb\n"), 0o644)
	t.Setenv("FCDOUBLE_PROC_MOUNTS", mounts)
	t.Setenv("FCDOUBLE_BOOT", "none")
	spec := testSpec
	spec.ID, spec.Dir, spec.ConsoleLog = "refused", dir, filepath.Join(dir, "console.log")
	spec.Kernel, spec.Initramfs = filepath.Join(dir, "kernel"), filepath.Join(dir, "initramfs")
	os.WriteFile(spec.Kernel, []byte("k"), 0o644)
	os.WriteFile(spec.Initramfs, []byte("i"), 0o600)
	d := &Driver{Binary: b.Firecracker, Jailer: &Jailer{Binary: b.Jailer, ChrootBaseDir: base, UID: jailUID, GID: jailGID, MountTable: mounts}}
	_, err := d.Start(context.Background(), spec)
	if err == nil || !strings.Contains(err.Error(), "controller cpu is unavailable") {
		t.Fatalf("Start = %v, want the jailer's refusal", err)
	}
	if _, err := os.Stat(filepath.Join(base, "firecracker", spec.ID)); !os.IsNotExist(err) {
		t.Errorf("the jail is left after a failed start (%v)", err)
	}
}

// TestRecovery: a restarted orchestrator adopts a running jailed VM (its
// jail goes when it ends), reaps one it does not adopt, and removes jails
// no monitor runs in.
func TestRecovery(t *testing.T) {
	hosttest.RequireRoot(t, "the jailer chowns, mknods and drops privileges; TAPs")
	b := buildDouble(t)
	base := jailBase(t)
	_, mounts := fakeCgroups(t, base)
	t.Setenv("FCDOUBLE_PROC_MOUNTS", mounts)
	t.Setenv("FCDOUBLE_BOOT", "none")
	tap := testTAP(t)
	d := &Driver{Binary: b.Firecracker, Jailer: &Jailer{Binary: b.Jailer, ChrootBaseDir: base, UID: jailUID, GID: jailGID, ParentCgroup: "fireactions", MountTable: mounts}}
	start := func(id string) vmm.Machine {
		dir := t.TempDir()
		spec := testSpec
		spec.ID, spec.Dir, spec.ConsoleLog, spec.TAP = id, dir, filepath.Join(dir, "console.log"), tap
		spec.Kernel, spec.Initramfs = filepath.Join(dir, "kernel"), filepath.Join(dir, "initramfs")
		os.WriteFile(spec.Kernel, []byte("k"), 0o644)
		os.WriteFile(spec.Initramfs, []byte("i"), 0o600)
		m, err := d.Start(context.Background(), spec)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	adoptee, reapee := start("adoptee"), start("reapee")
	stale := filepath.Join(base, "firecracker", "stale")
	os.MkdirAll(filepath.Join(stale, "root"), 0o700)

	// A new driver, as after a restart.
	d2 := &Driver{Binary: b.Firecracker, Jailer: d.Jailer}
	if err := d2.RemoveStaleJails(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Error("a jail with no monitor was kept")
	}
	for _, id := range []string{"adoptee", "reapee"} {
		if _, err := os.Stat(filepath.Join(base, "firecracker", id)); err != nil {
			t.Errorf("the jail of running vm %s was removed: %v", id, err)
		}
	}
	if _, err := d2.Adopt("reapee", adoptee.PID()); err == nil {
		t.Error("vm adoptee's monitor was adopted as vm reapee's")
	}
	m, err := d2.Adopt("adoptee", adoptee.PID())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := d2.Reap(ctx, "reapee", reapee.PID()); err != nil {
		t.Fatal(err)
	}
	if !processGone("reapee") {
		t.Error("the reaped VM's monitor still runs")
	}
	if err := m.Kill(ctx); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"adoptee", "reapee"} {
		if _, err := os.Stat(filepath.Join(base, "firecracker", id)); !os.IsNotExist(err) {
			t.Errorf("vm %s's jail left (%v)", id, err)
		}
	}
	<-adoptee.Done()
	<-reapee.Done()
}

// TestJailArgsPerSlot: the jailer is told each VM's own uid and gid, the
// ranges' starts plus its slot, so VMs in different slots never share a
// user.
func TestJailArgsPerSlot(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	j := &Jailer{Binary: "jailer", ChrootBaseDir: t.TempDir(), UID: jailUID, GID: jailGID}
	seen := map[string]string{}
	for _, c := range []struct {
		id       string
		slot     int
		uid, gid string
	}{
		{"vm-a", 0, "64123", "64124"},
		{"vm-b", 2, "64125", "64126"},
		{"vm-c", 254, "64377", "64378"},
	} {
		t.Run(c.id, func(t *testing.T) {
			spec := testSpec
			spec.ID, spec.Slot = c.id, c.slot
			jl, err := j.jailOf(exe, spec.ID)
			if err != nil {
				t.Fatal(err)
			}
			jl.uid, jl.gid = j.IDs(spec)
			args := strings.Join(jl.args(spec, apiSocket), " ")
			if want := "--uid " + c.uid + " --gid " + c.gid + " "; !strings.Contains(args, want) {
				t.Errorf("jailer args %q lack %q", args, want)
			}
			if other, ok := seen[c.uid]; ok {
				t.Errorf("vms %s and %s both run as uid %s", other, c.id, c.uid)
			}
			seen[c.uid] = c.id
		})
	}
}

// TestJailOwnershipPerSlot: two VMs in different slots get their own
// files and TAPs as their own users: the initramfs and the writable disk
// are uid+slot's, the TAP's owner and group too; the shared kernel stays
// root's.
func TestJailOwnershipPerSlot(t *testing.T) {
	hosttest.RequireRoot(t, "chown and TAPs")
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	base := jailBase(t)
	j := &Jailer{Binary: "jailer", ChrootBaseDir: base, UID: jailUID, GID: jailGID, MountTable: filepath.Join(base, "no-mounts")}
	for i, slot := range []int{2, 7} {
		t.Run(fmt.Sprintf("slot %d", slot), func(t *testing.T) {
			dir := t.TempDir()
			spec := testSpec
			spec.ID, spec.Slot, spec.Dir = fmt.Sprintf("own%d", i), slot, dir
			spec.TAP = fmt.Sprintf("fco%d%d", os.Getpid()%100000, i)
			if out, err := exec.Command("ip", "tuntap", "add", "dev", spec.TAP, "mode", "tap", "user", "0", "group", "0").CombinedOutput(); err != nil {
				t.Fatalf("create tap: %v: %s", err, out)
			}
			t.Cleanup(func() { _ = exec.Command("ip", "link", "del", spec.TAP).Run() })
			spec.Kernel, spec.Initramfs = filepath.Join(dir, "kernel"), filepath.Join(dir, "initramfs")
			disk := filepath.Join(dir, "disk.ext4")
			os.WriteFile(spec.Kernel, []byte("k"), 0o644)
			os.WriteFile(spec.Initramfs, []byte("i"), 0o600)
			os.WriteFile(disk, []byte("d"), 0o600)
			spec.Drives = []vmm.Drive{{ID: "fa-disk", Path: disk}}
			jl, err := j.prepare(context.Background(), slog.New(slog.DiscardHandler), exe, spec)
			if err != nil {
				t.Fatal(err)
			}
			defer jl.remove()
			uid, gid := jailUID+slot, jailGID+slot
			for _, c := range []struct {
				file     string
				uid, gid int
			}{
				{kernelName, 0, 0},
				{initrdName, uid, gid},
				{"drive-fa_disk", uid, gid},
			} {
				st := statOf(t, jl.hostPath(c.file))
				if int(st.Uid) != c.uid || int(st.Gid) != c.gid {
					t.Errorf("%s: owner %d:%d, want %d:%d", c.file, st.Uid, st.Gid, c.uid, c.gid)
				}
			}
			for file, want := range map[string]int{"owner": uid, "group": gid} {
				got, err := os.ReadFile(filepath.Join("/sys/class/net", spec.TAP, file))
				if err != nil || strings.TrimSpace(string(got)) != strconv.Itoa(want) {
					t.Errorf("tap %s %s = %q (%v), want %d", spec.TAP, file, got, err, want)
				}
			}
		})
	}
}
