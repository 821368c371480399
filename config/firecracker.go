package config

import (
	"errors"
	"path/filepath"
	"strings"
	"time"
)

// Firecracker tunes the Firecracker driver and its jailer. The jailer is
// on by default: each VM's firecracker runs in a chroot of its own, as an
// unprivileged uid/gid of its own (uid+n, gid+n for the VM whose address
// is the n-th of network.cidr), in a cgroup whose limits come from the
// VM's shape.
type Firecracker struct {
	Binary       string `yaml:"binary" doc:"The firecracker binary: an absolute path, or a name looked up in PATH."`
	JailerBinary string `yaml:"jailer_binary" doc:"The jailer binary of the same Firecracker release: an absolute path, or a name looked up in PATH."`
	// Jailer is nil until defaults are applied.
	Jailer *bool `yaml:"jailer" doc:"Run each VM's firecracker through the jailer (a chroot, uid/gid and cgroup of its own). Off only for development."`
	// ChrootBaseDir is "" for <state_dir>/jailer.
	ChrootBaseDir string `yaml:"chroot_base_dir" doc:"Absolute directory the jailer builds the VMs' chroots in (<chroot_base_dir>/firecracker/<vm>/root). Keep it on state_dir's file system, so boot files are hard-linked rather than copied. Empty: <state_dir>/jailer."`
	UID           int    `yaml:"uid" doc:"The first of the unprivileged uids the jailed firecrackers run as: the VM whose address is at offset n in network.cidr runs as uid+n, so uid up to uid + the number of addresses in cidr must be used by nothing else and stay at most 2147483646. Not 0. Required with the jailer."`
	GID           int    `yaml:"gid" doc:"The first of the jailed firecrackers' gids: the VM at offset n in network.cidr runs as gid+n, so gid up to gid + the number of addresses in cidr must be used by nothing else and stay at most 2147483646. Not 0. Required with the jailer."`
	// ParentCgroup is where, in the cgroup v2 hierarchy, the VMs' cgroups
	// are made.
	ParentCgroup string `yaml:"parent_cgroup" doc:"cgroup v2 directory, relative to the hierarchy's root, holding one cgroup per VM (<parent_cgroup>/<vm>, with cpu.max of its vcpus and memory.max of its memory_mib plus memory_overhead_mib)."`
	// MemoryOverheadMiB is the VMM's own memory, on top of the guest's.
	MemoryOverheadMiB int `yaml:"memory_overhead_mib" doc:"Added to a VM's memory_mib for its cgroup's memory.max: the VMM's own memory."`
	// MMDS turns on Firecracker's metadata service for every VM.
	MMDS bool `yaml:"mmds" doc:"Give each guest Firecracker's MMDS (version V2, at 169.254.169.254 on its eth0) holding non-secret metadata about its VM: {\"fireactions\": {\"vm_id\", \"pool\", \"host_id\"}}. Never a token or runner credential. Off by default."`
	// APICallTimeout bounds each call to a VM's Firecracker API.
	APICallTimeout time.Duration `yaml:"api_call_timeout" doc:"How long each call to a VM's Firecracker API may take to be answered (1s-5m). A VMM that does not answer in time is killed and its VM fails to start (counted as a failure with reason start), so a hung VMM holds neither its VM nor a drain."`
}

// firecrackerDefaults are the Firecracker driver's defaults.
func firecrackerDefaults() Firecracker {
	jailer := true
	return Firecracker{
		Binary:            "firecracker",
		JailerBinary:      "jailer",
		Jailer:            &jailer,
		ParentCgroup:      "fireactions",
		MemoryOverheadMiB: 64,
		APICallTimeout:    5 * time.Second,
	}
}

// JailerOn reports whether VMs run through the jailer.
func (f Firecracker) JailerOn() bool { return f.Jailer == nil || *f.Jailer }

// ChrootBase is chroot_base_dir, or its default under stateDir.
func (f Firecracker) ChrootBase(stateDir string) string {
	if f.ChrootBaseDir != "" {
		return f.ChrootBaseDir
	}
	return filepath.Join(stateDir, "jailer")
}

// longestJailSocket is how long, beyond the chroot base, the path of a
// jailed VM's API socket can be: /<exec file name>/<vm id, 13 at most
// (fa<id> is a TAP name)>/root/run/fc.sock.
func longestJailSocket(binary string) int {
	name := max(len(filepath.Base(binary)), len("firecracker"))
	return 1 + name + 1 + 13 + len("/root/run/fc.sock")
}

// maxJailID is the highest uid or gid a jailed VM may get, 2^31-2: the
// VMs' ids stay in the positive signed 32-bit range, which tools that
// keep ids in signed integers handle too.
const maxJailID = 1<<31 - 2

// firecracker checks the vmm.firecracker section. The jailer's uid and
// gid are required only when the driver is firecracker with the jailer;
// then their ranges, one id per address of cidr (network.cidr), must fit.
func (v *validator) firecracker(f field, fc *Firecracker, driver, stateDir, cidr string) {
	jailed := driver == "firecracker" && fc.JailerOn()
	v.check(
		rule{f.child("binary"), required(fc.Binary)},
		rule{f.child("jailer_binary"), requiredIf(fc.JailerOn(), fc.JailerBinary)},
		rule{f.child("chroot_base_dir"), chrootBase(fc, stateDir, jailed)},
		rule{f.child("uid"), jailIDs(fc.UID, jailed, "uid", cidr)},
		rule{f.child("gid"), jailIDs(fc.GID, jailed, "gid", cidr)},
		rule{f.child("parent_cgroup"), parentCgroup(fc.ParentCgroup)},
		rule{f.child("memory_overhead_mib"), notNegative(fc.MemoryOverheadMiB)},
		rule{f.child("api_call_timeout"), durationBetween(fc.APICallTimeout, time.Second, 5*time.Minute)},
	)
}

func requiredIf(cond bool, s string) error {
	if cond {
		return required(s)
	}
	return nil
}

// chrootBase checks chroot_base_dir, and that the API socket paths under
// it stay within a unix socket's limit.
func chrootBase(fc *Firecracker, stateDir string, jailed bool) error {
	if fc.ChrootBaseDir != "" {
		if err := absolute(fc.ChrootBaseDir); err != nil {
			return err
		}
	}
	base := fc.ChrootBase(stateDir)
	if n := len(base) + longestJailSocket(fc.Binary); jailed && n > 107 {
		return errorf("%s is too long: the VMs' API sockets under it would be %d bytes, more than a unix socket's 107", base, n)
	}
	return nil
}

// jailID checks the jailed VMM's uid or gid.
func jailID(id int, jailed bool, what string) error {
	switch {
	case id < 0 || id > 1<<32-2:
		return errorf("%d is not a %s", id, what)
	case id == 0 && jailed:
		return errorf("must be set, and not 0: the first of the unprivileged %ss the jailed firecrackers run as", what)
	}
	return nil
}

// jailIDs checks the first of the jailed VMMs' uids or gids, then that
// the VMs' ids, first + 0 .. first + the number of addresses in cidr,
// stay at most maxJailID. A cidr that does not parse is network.cidr's
// own error.
func jailIDs(first int, jailed bool, what, cidr string) error {
	if err := jailID(first, jailed, what); err != nil {
		return err
	}
	p, err := parseCIDR(cidr)
	if !jailed || err != nil {
		return nil
	}
	n := 1 << (32 - p.Bits())
	if first+n > maxJailID {
		return errorf("%d + %d (one per address of network.cidr %s) is more than %d: the VM at offset n runs as %s %d+n; use %d or lower",
			first, n, cidr, maxJailID, what, first, maxJailID-n)
	}
	return nil
}

// parentCgroup accepts a relative cgroup path without "." or ".." (the
// jailer's rule); "" leaves the jailer's default.
func parentCgroup(p string) error {
	if p == "" {
		return nil
	}
	for _, c := range strings.Split(p, "/") {
		if c == "" || c == "." || c == ".." {
			return errors.New("must be a relative path without empty, '.' or '..' parts")
		}
	}
	return nil
}

// durationBetween checks lo <= d <= hi.
func durationBetween(d, lo, hi time.Duration) error {
	if err := durationAtLeast(d, lo); err != nil {
		return err
	}
	if d > hi {
		return errorf("%s is more than %s", shortDuration(d), shortDuration(hi))
	}
	return nil
}
