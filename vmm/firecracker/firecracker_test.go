package firecracker

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/internal/double/firecrackerdouble"
	"github.com/nixos-fireactions/nixos-fireactions/internal/hosttest"
	"github.com/nixos-fireactions/nixos-fireactions/vmm"
	"github.com/nixos-fireactions/nixos-fireactions/vmm/firecracker/apispec"
)

var testSpec = vmm.Spec{
	ID: "0a1b2c3d4e5f", VCPUs: 2, MemoryMiB: 512, TAP: "fa0a1b2c3d4e5f",
	MAC: "02:00:00:00:00:01", Cmdline: "quiet extra=1",
}

// TestBootRequestsMatchTheAPIDescription: every request the driver can
// send to start a VM is valid for Firecracker's own API description, for
// the shapes the configuration allows, jailed or not, with the MMDS or
// without.
func TestBootRequestsMatchTheAPIDescription(t *testing.T) {
	s := firecrackerdouble.LoadSpec(t)
	withDrives := testSpec
	withDrives.Drives = []vmm.Drive{{ID: "fa-image", Path: "/img/root.erofs", ReadOnly: true}, {ID: "fa-disk", Path: "/vm/disk.ext4"}}
	template := testSpec
	template.Identity = "/d/identity.sock"
	specs := []vmm.Spec{testSpec, withDrives, template, {ID: "a", VCPUs: 1, MemoryMiB: 128, TAP: "faa"}, {ID: "b", VCPUs: 32, MemoryMiB: 65536, TAP: "fab", Cmdline: "x"}}
	for _, spec := range specs {
		jailed := Paths{Kernel: "/kernel", Initrd: "/initramfs"}
		for _, d := range spec.Drives {
			jailed.Drives = append(jailed.Drives, "/"+driveName(d))
		}
		for _, paths := range []Paths{jailed, HostPaths(spec)} {
			for _, r := range append(BootRequests(spec, paths, false), BootRequests(spec, paths, true)...) {
				op, params, ok := s.Match("PUT", r.Path)
				if !ok {
					t.Fatalf("PUT %s is not in the API description", r.Path)
				}
				for _, v := range params {
					if strings.ContainsFunc(v, func(c rune) bool {
						return !(c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z')
					}) {
						t.Errorf("PUT %s: path id %q has characters Firecracker refuses", r.Path, v)
					}
				}
				body, _ := json.Marshal(r.Body)
				if err := s.ValidateBody(op, body); err != nil {
					t.Errorf("PUT %s %s: %v", r.Path, body, err)
				}
				if op.Phase == apispec.PostBoot {
					t.Errorf("PUT %s is post-boot only", r.Path)
				}
			}
		}
	}
}

// TestBootRequestsCarryTheSpec: the requests say what the spec says.
func TestBootRequestsCarryTheSpec(t *testing.T) {
	spec := testSpec
	spec.Drives = []vmm.Drive{{ID: "fa-image", Path: "/img/root.erofs", ReadOnly: true}, {ID: "fa-disk", Path: "/vm/disk.ext4"}}
	rs := BootRequests(spec, Paths{Kernel: "/kernel", Initrd: "/initramfs", Drives: []string{"/drive-fa_image", "/drive-fa_disk"}}, false)
	if len(rs) != 6 {
		t.Fatalf("%d requests, want 6", len(rs))
	}
	boot := rs[0].Body.(BootSource)
	if boot.BootArgs != "console=ttyS0 reboot=k panic=1 pci=off quiet extra=1" {
		t.Errorf("boot_args %q", boot.BootArgs)
	}
	if boot.KernelImagePath != "/kernel" || boot.InitrdPath != "/initramfs" {
		t.Errorf("boot source %+v", boot)
	}
	if m := rs[1].Body.(MachineConfig); m != (MachineConfig{VCPUCount: 2, MemSizeMiB: 512, SMT: false}) {
		t.Errorf("machine config %+v", m)
	}
	b, _ := json.Marshal(rs[1].Body)
	if !strings.Contains(string(b), `"smt":false`) {
		t.Errorf("SMT off is not said explicitly: %s", b)
	}
	if n := rs[2].Body.(NetworkInterface); n != (NetworkInterface{IfaceID: "eth0", HostDevName: "fa0a1b2c3d4e5f", GuestMAC: "02:00:00:00:00:01"}) {
		t.Errorf("network interface %+v", n)
	}
	if d := rs[3].Body.(Drive); d != (Drive{DriveID: "fa_image", PathOnHost: "/drive-fa_image", IsReadOnly: true}) || rs[3].Path != "/drives/fa_image" {
		t.Errorf("image drive %s %+v", rs[3].Path, d)
	}
	if d := rs[4].Body.(Drive); d != (Drive{DriveID: "fa_disk", PathOnHost: "/drive-fa_disk"}) {
		t.Errorf("writable drive %+v", d)
	}
	if rs[5].Body.(action).ActionType != "InstanceStart" {
		t.Errorf("last request %+v", rs[5])
	}
}

// TestMMDSRequests: with the MMDS on, the configuration (V2, on the
// VM's one interface, after the interface is attached) and the data store
// come before InstanceStart; off, neither is sent. The data store is the
// spec's metadata under "fireactions", vm_id the spec's own id.
func TestMMDSRequests(t *testing.T) {
	spec := testSpec
	spec.Drives = []vmm.Drive{{ID: "fa-disk", Path: "/vm/disk.ext4"}}
	spec.Metadata = map[string]string{"vm_id": "forged", "pool": "p1", "host_id": "h1"}
	for _, c := range []struct {
		mmds  bool
		paths string
	}{
		{false, "/boot-source /machine-config /network-interfaces/eth0 /drives/fa_disk /actions"},
		{true, "/boot-source /machine-config /network-interfaces/eth0 /drives/fa_disk /mmds/config /mmds /actions"},
	} {
		t.Run(fmt.Sprintf("mmds %v", c.mmds), func(t *testing.T) {
			var paths []string
			bodies := map[string]string{}
			for _, r := range BootRequests(spec, HostPaths(spec), c.mmds) {
				paths = append(paths, r.Path)
				b, _ := json.Marshal(r.Body)
				bodies[r.Path] = string(b)
			}
			if got := strings.Join(paths, " "); got != c.paths {
				t.Fatalf("requests %s, want %s", got, c.paths)
			}
			if !c.mmds {
				return
			}
			if got, want := bodies["/mmds/config"], `{"version":"V2","network_interfaces":["eth0"]}`; got != want {
				t.Errorf("MMDS config %s, want %s", got, want)
			}
			if got, want := bodies["/mmds"], `{"fireactions":{"host_id":"h1","pool":"p1","vm_id":"0a1b2c3d4e5f"}}`; got != want {
				t.Errorf("MMDS data store %s, want %s", got, want)
			}
		})
	}
}

func TestCgroupLimitsFollowTheVMShape(t *testing.T) {
	got := CgroupLimits(vmm.Spec{VCPUs: 2, MemoryMiB: 512}, 64)
	want := []string{"cpu.max=200000 100000", "memory.max=603979776"}
	if strings.Join(got, " | ") != strings.Join(want, " | ") {
		t.Fatalf("limits %q, want %q", got, want)
	}
}

func TestStartRefusesBadSpecs(t *testing.T) {
	d := &Driver{Binary: "firecracker"}
	for _, s := range []vmm.Spec{
		{ID: "has space", VCPUs: 1, MemoryMiB: 128},
		{ID: "a", VCPUs: 0, MemoryMiB: 128},
		{ID: "a", VCPUs: 33, MemoryMiB: 128},
		{ID: "a", VCPUs: 1, MemoryMiB: 128}, // no kernel, initramfs, TAP
		{ID: "a", VCPUs: 1, MemoryMiB: 128, Kernel: "/k", Initramfs: "/i", TAP: "t", ConsoleLog: "/c", Dir: "/d",
			Drives: []vmm.Drive{{ID: "a-b", Path: "/1"}, {ID: "a_b", Path: "/2"}}}, // one Firecracker id
		{ID: "a", VCPUs: 1, MemoryMiB: 128, Kernel: "/k", Initramfs: "/i", TAP: "t", ConsoleLog: "/c", Dir: "/d", Slot: -1},
		{ID: "a", VCPUs: 1, MemoryMiB: 128, Kernel: "/k", Initramfs: "/i", TAP: "t", ConsoleLog: "/c", Dir: "/d", Restore: "/s"},
		{ID: "a", VCPUs: 1, MemoryMiB: 128, Kernel: "/k", TAP: "t", ConsoleLog: "/c", Dir: "/d", Identity: "/d/id.sock", Restore: "/nonexistent/state"},
	} {
		if _, err := d.Start(context.Background(), s); err == nil {
			t.Errorf("spec %+v started", s)
		}
	}
}

// doubleSpec is a spec for a run against the double that boots nothing,
// with its files in a fresh directory, and the file the double records
// its requests in.
func doubleSpec(t *testing.T, initramfs []byte) (vmm.Spec, string) {
	t.Helper()
	dir := t.TempDir()
	record := filepath.Join(dir, "record.jsonl")
	t.Setenv("FCDOUBLE_BOOT", "none")
	t.Setenv("FCDOUBLE_RECORD", record)
	spec := testSpec
	spec.Dir, spec.ConsoleLog, spec.TAP = dir, filepath.Join(dir, "console.log"), testTAP(t)
	spec.Kernel, spec.Initramfs = filepath.Join(dir, "kernel"), filepath.Join(dir, "initramfs")
	if err := os.WriteFile(spec.Kernel, []byte("k"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(spec.Initramfs, initramfs, 0o600); err != nil {
		t.Fatal(err)
	}
	return spec, record
}

// TestStartThroughTheDouble runs the driver against the firecracker
// double without booting a guest: the process starts, every request is
// accepted, Kill is a hard stop and nothing is left.
func TestStartThroughTheDouble(t *testing.T) {
	hosttest.RequireRoot(t, "the double checks the TAP exists; creating one needs root")
	b := buildDouble(t)
	spec, record := doubleSpec(t, []byte("i"))

	d := &Driver{Binary: b.Firecracker}
	m, err := d.Start(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	if !IsOurs(m.PID(), spec.ID) || IsOurs(m.PID(), "other") || IsOurs(os.Getpid(), spec.ID) {
		t.Error("IsOurs does not tell the VM's monitor from other processes")
	}
	assertAllAccepted(t, readRecord(t, record), spec, false)
	select {
	case <-m.Done():
		t.Fatalf("the VMM exited after InstanceStart: %v", m.Err())
	case <-time.After(300 * time.Millisecond):
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := m.Kill(ctx); err != nil {
		t.Fatal(err)
	}
	if m.Err() != vmm.ErrKilled {
		t.Errorf("Err = %v, want ErrKilled", m.Err())
	}
	if !processGone(spec.ID) {
		t.Error("the VMM still runs after Kill")
	}
}

// TestMMDSThroughTheDouble runs the driver with the MMDS off and on
// against the double, which checks each request against the API
// description and Firecracker's rules: with it on, the MMDS requests are
// accepted in order and the double holds the VM's metadata; off, none is
// sent. No request carries the runner's credential, which is in the
// initramfs only.
func TestMMDSThroughTheDouble(t *testing.T) {
	hosttest.RequireRoot(t, "the double checks the TAP exists; creating one needs root")
	b := buildDouble(t)
	const secret = "RUNNER-CREDENTIAL-5f2b9c"
	for _, mmds := range []bool{false, true} {
		t.Run(fmt.Sprintf("mmds %v", mmds), func(t *testing.T) {
			spec, record := doubleSpec(t, []byte("token="+secret))
			spec.Metadata = map[string]string{"vm_id": spec.ID, "pool": "p1", "host_id": "h1"}

			m, err := (&Driver{Binary: b.Firecracker, MMDS: mmds}).Start(context.Background(), spec)
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				if err := m.Kill(ctx); err != nil {
					t.Error(err)
				}
			}()
			recs := readRecord(t, record)
			assertAllAccepted(t, recs, spec, mmds)
			var doc *MMDSDocument
			for _, r := range recs {
				if strings.Contains(r.Body, secret) {
					t.Errorf("PUT %s carries the runner's credential: %s", r.Path, r.Body)
				}
				switch {
				case r.Path == "/mmds":
					doc = new(MMDSDocument)
					if err := json.Unmarshal([]byte(r.Body), doc); err != nil {
						t.Fatalf("MMDS data store %q: %v", r.Body, err)
					}
				case strings.HasPrefix(r.Path, "/mmds") && !mmds:
					t.Errorf("PUT %s with the MMDS off", r.Path)
				}
			}
			if !mmds {
				return
			}
			if doc == nil {
				t.Fatal("no MMDS data store was PUT")
			}
			if want := fmt.Sprint(spec.Metadata); fmt.Sprint(doc.Fireactions) != want {
				t.Errorf("MMDS metadata %v, want %v", doc.Fireactions, want)
			}
		})
	}
}

// TestStartFailsCleanly: a request Firecracker refuses fails Start with
// its fault message, and the VMM is gone.
func TestStartFailsCleanly(t *testing.T) {
	hosttest.RequireRoot(t, "creating a TAP needs root")
	b := buildDouble(t)
	spec := refusedSpec(t)
	_, err := (&Driver{Binary: b.Firecracker}).Start(context.Background(), spec)
	if err == nil || !strings.Contains(err.Error(), "The kernel file cannot be opened") {
		t.Fatalf("Start = %v, want the double's fault about the kernel", err)
	}
	waitFor(t, 5*time.Second, "the VMM to be gone", func() bool { return processGone(spec.ID) })
}

// refusedSpec is a spec the double refuses at PUT /boot-source (its
// kernel is missing: "The kernel file cannot be opened"), booting
// nothing.
func refusedSpec(t *testing.T) vmm.Spec {
	t.Helper()
	dir := t.TempDir()
	t.Setenv("FCDOUBLE_BOOT", "none")
	spec := testSpec
	spec.Dir, spec.ConsoleLog, spec.TAP = dir, filepath.Join(dir, "console.log"), testTAP(t)
	spec.Kernel, spec.Initramfs = filepath.Join(dir, "no-such-kernel"), filepath.Join(dir, "initramfs")
	if err := os.WriteFile(spec.Initramfs, []byte("i"), 0o600); err != nil {
		t.Fatal(err)
	}
	return spec
}

func waitFor(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
