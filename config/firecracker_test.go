package config

import (
	"strings"
	"testing"
)

// TestFirecrackerDefaults: the jailer is on unless switched off, and
// chroots go under state_dir by default.
func TestFirecrackerDefaults(t *testing.T) {
	f := newFixture(t)
	c := f.mustParse(minimalYAML + "vmm:\n  driver: firecracker\n  firecracker: {uid: 64000, gid: 64000}\n")
	fc := c.VMM.Firecracker
	if !fc.JailerOn() || fc.Binary != "firecracker" || fc.JailerBinary != "jailer" || fc.ParentCgroup != "fireactions" || fc.MemoryOverheadMiB != 64 {
		t.Errorf("defaults %+v", fc)
	}
	if got := fc.ChrootBase(c.StateDir); got != "/var/lib/fireactions/jailer" {
		t.Errorf("chroot base %q", got)
	}
	off := f.mustParse(minimalYAML + "vmm:\n  driver: firecracker\n  firecracker: {jailer: false}\n")
	if off.VMM.Firecracker.JailerOn() {
		t.Error("jailer: false left the jailer on")
	}
}

func TestFirecrackerValidation(t *testing.T) {
	for _, c := range []struct {
		name, yaml, want string
	}{
		{"jailed without a uid", "vmm:\n  driver: firecracker\n", "vmm.firecracker.uid: must be set, and not 0"},
		{"jailed as root", "vmm:\n  driver: firecracker\n  firecracker: {uid: 0, gid: 5}\n", "vmm.firecracker.uid: must be set, and not 0"},
		{"negative gid", "vmm:\n  driver: firecracker\n  firecracker: {uid: 5, gid: -1}\n", "vmm.firecracker.gid: -1 is not a gid"},
		{"relative chroot base", "vmm:\n  driver: firecracker\n  firecracker: {uid: 5, gid: 5, chroot_base_dir: jails}\n", "vmm.firecracker.chroot_base_dir"},
		{"chroot base too long for the API socket", "vmm:\n  driver: firecracker\n  firecracker: {uid: 5, gid: 5, chroot_base_dir: /" + strings.Repeat("j", 70) + "}\n", "more than a unix socket's 107"},
		{"parent cgroup climbing out", "vmm:\n  driver: firecracker\n  firecracker: {uid: 5, gid: 5, parent_cgroup: ../system.slice}\n", "vmm.firecracker.parent_cgroup"},
		{"no jailer binary", "vmm:\n  driver: firecracker\n  firecracker: {uid: 5, gid: 5, jailer_binary: \"\"}\n", "vmm.firecracker.jailer_binary: must be set"},
		{"negative overhead", "vmm:\n  driver: firecracker\n  firecracker: {uid: 5, gid: 5, memory_overhead_mib: -1}\n", "vmm.firecracker.memory_overhead_mib"},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t)
			_, err := f.parse(minimalYAML + c.yaml)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Parse = %v, want an error containing %q", err, c.want)
			}
		})
	}
}

// TestFirecrackerUnusedNeedsNoUID: with the QEMU driver, or without the
// jailer, the jailed user is not asked for.
func TestFirecrackerUnusedNeedsNoUID(t *testing.T) {
	f := newFixture(t)
	f.mustParse(minimalYAML)
	f.mustParse(minimalYAML + "vmm:\n  driver: firecracker\n  firecracker: {jailer: false}\n")
}
