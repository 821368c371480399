package config

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestFirecrackerDefaults: the jailer is on unless switched off, and
// chroots go under state_dir by default.
func TestFirecrackerDefaults(t *testing.T) {
	f := newFixture(t)
	c := f.mustParse(minimalYAML + "vmm:\n  driver: firecracker\n  firecracker: {uid: 64000, gid: 64000}\n")
	fc := c.VMM.Firecracker
	if !fc.JailerOn() || fc.Binary != "firecracker" || fc.JailerBinary != "jailer" || fc.ParentCgroup != "fireactions" || fc.MemoryOverheadMiB != 64 || fc.APICallTimeout != 5*time.Second {
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
		{"no API call bound", "vmm:\n  driver: firecracker\n  firecracker: {uid: 5, gid: 5, api_call_timeout: 0s}\n", "vmm.firecracker.api_call_timeout"},
		{"API call bound of an hour", "vmm:\n  driver: firecracker\n  firecracker: {uid: 5, gid: 5, api_call_timeout: 1h}\n", "vmm.firecracker.api_call_timeout"},
		{"uid range past the limit (/24: 256 ids)", "vmm:\n  driver: firecracker\n  firecracker: {uid: 2147483391, gid: 5}\n",
			"vmm.firecracker.uid: 2147483391 + 256 (one per address of network.cidr 10.200.0.0/24) is more than 2147483646"},
		{"gid range past the limit (/24: 256 ids)", "vmm:\n  driver: firecracker\n  firecracker: {uid: 5, gid: 2147483391}\n",
			"vmm.firecracker.gid: 2147483391 + 256"},
		{"uid range past the limit with a larger network", "network: {cidr: 10.0.0.0/16}\nvmm:\n  driver: firecracker\n  firecracker: {uid: 2147418111, gid: 5}\n",
			"vmm.firecracker.uid: 2147418111 + 65536 (one per address of network.cidr 10.0.0.0/16) is more than 2147483646: the VM at offset n runs as uid 2147418111+n; use 2147418110 or lower"},
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

// TestFirecrackerIDRangeBoundary: uid and gid plus the addresses of
// network.cidr may reach 2147483646 and no further.
func TestFirecrackerIDRangeBoundary(t *testing.T) {
	for _, c := range []struct {
		name, cidr string
		uid, gid   int
		bad        string // the field refused; "" accepted
	}{
		{"/24 at the limit", "10.200.0.0/24", 2147483390, 2147483390, ""},
		{"/24 uid one past", "10.200.0.0/24", 2147483391, 2147483390, "vmm.firecracker.uid"},
		{"/24 gid one past", "10.200.0.0/24", 2147483390, 2147483391, "vmm.firecracker.gid"},
		{"/30 at the limit", "10.200.0.0/30", 2147483642, 2147483642, ""},
		{"/30 one past", "10.200.0.0/30", 2147483643, 64000, "vmm.firecracker.uid"},
		{"/16 at the limit", "10.0.0.0/16", 2147418110, 64000, ""},
		{"/16 one past", "10.0.0.0/16", 64000, 2147418111, "vmm.firecracker.gid"},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t)
			yaml := fmt.Sprintf("network: {cidr: %s}\nvmm:\n  driver: firecracker\n  firecracker: {uid: %d, gid: %d}\n", c.cidr, c.uid, c.gid)
			// max 1: a /30 has one guest address.
			_, err := f.parse(strings.Replace(minimalYAML, "min_idle: 1\n    max: 2", "max: 1", 1) + yaml)
			switch {
			case c.bad == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case c.bad != "" && (err == nil || !strings.Contains(err.Error(), c.bad+": ")):
				t.Fatalf("Parse = %v, want %s refused", err, c.bad)
			}
		})
	}
	// Without the jailer the ids are unused, and their range too.
	newFixture(t).mustParse(minimalYAML + "vmm:\n  driver: firecracker\n  firecracker: {jailer: false, uid: 2147483600, gid: 2147483600}\n")
}

// TestFirecrackerMMDSOffByDefault: the MMDS is off unless asked for.
func TestFirecrackerMMDSOffByDefault(t *testing.T) {
	f := newFixture(t)
	if c := f.mustParse(minimalYAML + "vmm:\n  driver: firecracker\n  firecracker: {uid: 64000, gid: 64000}\n"); c.VMM.Firecracker.MMDS {
		t.Error("the MMDS is on by default")
	}
	if c := f.mustParse(minimalYAML + "vmm:\n  driver: firecracker\n  firecracker: {uid: 64000, gid: 64000, mmds: true}\n"); !c.VMM.Firecracker.MMDS {
		t.Error("mmds: true left the MMDS off")
	}
}

// TestFirecrackerUnusedNeedsNoUID: with the QEMU driver, or without the
// jailer, the jailed user is not asked for.
func TestFirecrackerUnusedNeedsNoUID(t *testing.T) {
	f := newFixture(t)
	f.mustParse(minimalYAML)
	f.mustParse(minimalYAML + "vmm:\n  driver: firecracker\n  firecracker: {jailer: false}\n")
}
