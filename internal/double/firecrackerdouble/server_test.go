package firecrackerdouble

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/nixos-fireactions/nixos-fireactions/vmm"
	"github.com/nixos-fireactions/nixos-fireactions/vmm/firecracker"
)

// fixture is a double's API with real boot files and one TAP, fatap0,
// recording every request.
type fixture struct {
	t              *testing.T
	srv            *Server
	kernel, initrd string
	record         bytes.Buffer
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	dir := t.TempDir()
	f := &fixture{t: t, kernel: filepath.Join(dir, "vmlinux"), initrd: filepath.Join(dir, "initrd")}
	os.WriteFile(f.kernel, []byte("kernel"), 0o644)
	os.WriteFile(f.initrd, []byte("initrd"), 0o644)
	f.srv = NewServer(Options{
		Spec: LoadSpec(t), ID: "vm1", Record: &f.record,
		OpenTAP: func(name string) error {
			if name != "fatap0" {
				return errors.New("no such device")
			}
			return nil
		},
	})
	return f
}

func (f *fixture) do(method, path, body string) (int, string) {
	f.t.Helper()
	rec := httptest.NewRecorder()
	f.srv.ServeHTTP(rec, httptest.NewRequest(method, "http://localhost"+path, strings.NewReader(body)))
	var fault struct {
		FaultMessage string `json:"fault_message"`
	}
	_ = json.Unmarshal(rec.Body.Bytes(), &fault)
	return rec.Code, fault.FaultMessage
}

func (f *fixture) mustAccept(method, path, body string) {
	f.t.Helper()
	if code, fault := f.do(method, path, body); code != http.StatusNoContent {
		f.t.Fatalf("setup %s %s refused: %d %s", method, path, code, fault)
	}
}

// The driver's requests, valid, as the mutations below start from them.
func (f *fixture) bootSource() string {
	return `{"kernel_image_path":"` + f.kernel + `","initrd_path":"` + f.initrd + `","boot_args":"console=ttyS0 reboot=k panic=1 pci=off"}`
}

const (
	machineConfig = `{"vcpu_count":2,"mem_size_mib":512,"smt":false}`
	nic           = `{"iface_id":"eth0","host_dev_name":"fatap0","guest_mac":"02:00:00:00:00:01"}`
	instanceStart = `{"action_type":"InstanceStart"}`
)

func (f *fixture) configure() {
	f.mustAccept("PUT", "/boot-source", f.bootSource())
	f.mustAccept("PUT", "/machine-config", machineConfig)
	f.mustAccept("PUT", "/network-interfaces/eth0", nic)
}

// TestTheDoubleRefusesInvalidRequests: requests the driver could send by
// mistake (each a small change to one it does send) are refused with 400
// and a fault message, as the API description and Firecracker say, and
// recorded as refused.
func TestTheDoubleRefusesInvalidRequests(t *testing.T) {
	cases := []struct {
		name         string
		setup        func(f *fixture)
		method, path string
		body         func(f *fixture) string
		fault        string
	}{
		{"unknown field (initrd for initrd_path)", nil, "PUT", "/boot-source",
			func(f *fixture) string { return `{"kernel_image_path":"` + f.kernel + `","initrd":"` + f.initrd + `"}` },
			`unknown field "initrd"`},
		{"missing required field", nil, "PUT", "/boot-source",
			func(*fixture) string { return `{"boot_args":"console=ttyS0"}` }, `missing field "kernel_image_path"`},
		{"wrong type: vCPUs as a string", nil, "PUT", "/machine-config",
			func(*fixture) string { return `{"vcpu_count":"2","mem_size_mib":512,"smt":false}` }, `vcpu_count: invalid type: string "2"`},
		{"wrong type: SMT as \"off\"", nil, "PUT", "/machine-config",
			func(*fixture) string { return `{"vcpu_count":2,"mem_size_mib":512,"smt":"off"}` }, "smt: invalid type"},
		{"memory as a fraction", nil, "PUT", "/machine-config",
			func(*fixture) string { return `{"vcpu_count":2,"mem_size_mib":512.5}` }, "expected an integer"},
		{"vCPUs beyond the maximum", nil, "PUT", "/machine-config",
			func(*fixture) string { return `{"vcpu_count":64,"mem_size_mib":512}` }, "more than the maximum 32"},
		{"bad enum: action type", nil, "PUT", "/actions",
			func(*fixture) string { return `{"action_type":"Start"}` }, `unknown variant "Start"`},
		{"bad enum: huge pages", nil, "PUT", "/machine-config",
			func(*fixture) string { return `{"vcpu_count":2,"mem_size_mib":512,"huge_pages":"2MB"}` }, `unknown variant "2MB"`},
		{"duplicate field", nil, "PUT", "/machine-config",
			func(*fixture) string { return `{"vcpu_count":2,"vcpu_count":4,"mem_size_mib":512}` }, `duplicate field "vcpu_count"`},
		{"path and body ids differ", nil, "PUT", "/network-interfaces/eth0",
			func(*fixture) string { return `{"iface_id":"eth1","host_dev_name":"fatap0"}` }, faultIDMismatch},
		{"path id with a hyphen", nil, "PUT", "/network-interfaces/eth-0",
			func(*fixture) string { return `{"iface_id":"eth-0","host_dev_name":"fatap0"}` }, faultBadID},
		{"misspelt path", nil, "PUT", "/network-interface/eth0",
			func(*fixture) string { return nic }, "Invalid request method and/or path: PUT /network-interface/eth0."},
		{"wrong method", nil, "POST", "/actions",
			func(*fixture) string { return instanceStart }, "Invalid request method and/or path: POST /actions."},
		{"malformed MAC", nil, "PUT", "/network-interfaces/eth0",
			func(*fixture) string {
				return `{"iface_id":"eth0","host_dev_name":"fatap0","guest_mac":"02:00:00:00:01"}`
			}, "invalid MAC address"},
		{"TAP that does not exist", nil, "PUT", "/network-interfaces/eth0",
			func(*fixture) string { return `{"iface_id":"eth0","host_dev_name":"fatap9"}` }, "Open tap device failed"},
		{"kernel that does not open", nil, "PUT", "/boot-source",
			func(f *fixture) string { return `{"kernel_image_path":"` + f.kernel + `.missing"}` }, "The kernel file cannot be opened"},
		{"InstanceStart without a boot source", nil, "PUT", "/actions",
			func(*fixture) string { return instanceStart }, faultNoKernel},
		{"pre-boot PUT after InstanceStart", startedFixture, "PUT", "/boot-source",
			func(f *fixture) string { return f.bootSource() }, faultAfterStart},
		{"machine config after InstanceStart", startedFixture, "PUT", "/machine-config",
			func(*fixture) string { return machineConfig }, faultAfterStart},
		{"network interface after InstanceStart", startedFixture, "PUT", "/network-interfaces/eth0",
			func(*fixture) string { return nic }, faultAfterStart},
		{"InstanceStart twice", startedFixture, "PUT", "/actions",
			func(*fixture) string { return instanceStart }, faultAfterStart},
		{"post-boot-only call before InstanceStart", nil, "PATCH", "/network-interfaces/eth0",
			func(*fixture) string { return `{"iface_id":"eth0"}` }, faultBeforeStart},
		{"SendCtrlAltDel before InstanceStart", nil, "PUT", "/actions",
			func(*fixture) string { return `{"action_type":"SendCtrlAltDel"}` }, faultBeforeStart},
		{"not JSON", nil, "PUT", "/machine-config",
			func(*fixture) string { return `vcpu_count=2` }, "malformed JSON"},
		{"MMDS config: unknown field", configuredFixture, "PUT", "/mmds/config",
			func(*fixture) string {
				return `{"version":"V2","network_interfaces":["eth0"],"ipv6_address":"fe80::1"}`
			},
			`unknown field "ipv6_address"`},
		{"MMDS config: interfaces as a string", configuredFixture, "PUT", "/mmds/config",
			func(*fixture) string { return `{"version":"V2","network_interfaces":"eth0"}` },
			`network_interfaces: invalid type: string "eth0", expected an array`},
		{"MMDS config: unknown version", configuredFixture, "PUT", "/mmds/config",
			func(*fixture) string { return `{"version":"V3","network_interfaces":["eth0"]}` }, `unknown variant "V3"`},
		{"MMDS config: no interfaces field", configuredFixture, "PUT", "/mmds/config",
			func(*fixture) string { return `{"version":"V2"}` }, `missing field "network_interfaces"`},
		{"MMDS config: no body", configuredFixture, "PUT", "/mmds/config",
			func(*fixture) string { return `` }, "a body is required"},
		{"MMDS config: empty interface list", configuredFixture, "PUT", "/mmds/config",
			func(*fixture) string { return `{"version":"V2","network_interfaces":[]}` }, faultMMDSNoIfaces},
		{"MMDS config: interface not attached", nil, "PUT", "/mmds/config",
			func(*fixture) string { return `{"version":"V2","network_interfaces":["eth0"]}` }, faultMMDSBadIface},
		{"MMDS config: address not link-local", configuredFixture, "PUT", "/mmds/config",
			func(*fixture) string {
				return `{"version":"V2","network_interfaces":["eth0"],"ipv4_address":"10.0.0.1"}`
			}, faultMMDSNotLinkLoc},
		{"MMDS config after InstanceStart", startedFixture, "PUT", "/mmds/config",
			func(*fixture) string { return `{"version":"V2","network_interfaces":["eth0"]}` }, faultAfterStart},
		{"MMDS data store not an object", nil, "PUT", "/mmds",
			func(*fixture) string { return `["vm1"]` }, "expected an object"},
	}
	if len(cases) < 8 {
		t.Fatal("the issue asks for at least 8")
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t)
			if c.setup != nil {
				c.setup(f)
			}
			f.record.Reset()
			code, fault := f.do(c.method, c.path, c.body(f))
			if code != http.StatusBadRequest {
				t.Fatalf("%s %s answered %d, want 400", c.method, c.path, code)
			}
			if !strings.Contains(fault, c.fault) {
				t.Fatalf("fault_message %q, want it to contain %q", fault, c.fault)
			}
			var r Record
			if err := json.Unmarshal(f.record.Bytes(), &r); err != nil || r.Status != 400 || r.Fault != fault {
				t.Fatalf("record %q does not show the refusal", f.record.String())
			}
		})
	}
}

func configuredFixture(f *fixture) { f.configure() }

func startedFixture(f *fixture) {
	f.configure()
	f.mustAccept("PUT", "/actions", instanceStart)
}

// TestTheDoubleAcceptsTheDriversRequests: the requests the driver sends,
// as it builds them (with the MMDS), pass the same checks, in order, and
// start the VM.
func TestTheDoubleAcceptsTheDriversRequests(t *testing.T) {
	f := newFixture(t)
	spec := vmm.Spec{ID: "vm1", VCPUs: 2, MemoryMiB: 512, TAP: "fatap0", MAC: "02:00:00:00:00:01", Cmdline: "quiet",
		Kernel: f.kernel, Initramfs: f.initrd, Metadata: map[string]string{"pool": "p1"},
		Drives: []vmm.Drive{{ID: "fa-image", Path: f.kernel, ReadOnly: true}, {ID: "fa-disk", Path: f.initrd}}}
	for _, r := range firecracker.BootRequests(spec, firecracker.HostPaths(spec), true) {
		body, _ := json.Marshal(r.Body)
		if code, fault := f.do("PUT", r.Path, string(body)); code != http.StatusNoContent {
			t.Fatalf("the driver's PUT %s %s refused: %d %s", r.Path, body, code, fault)
		}
	}
	select {
	case <-f.srv.Started():
	default:
		t.Fatal("InstanceStart did not start the VM")
	}
	if code, _ := f.do("GET", "/", ""); code != http.StatusOK {
		t.Errorf("GET / answered %d", code)
	}
	if got := f.srv.MMDS(); got.Config == nil || string(got.Data) != `{"fireactions":{"pool":"p1","vm_id":"vm1"}}` {
		t.Errorf("the double holds MMDS %+v, data %s", got.Config, got.Data)
	}
}

// TestTheDoubleKeepsTheMMDS: the MMDS configuration gets Firecracker's
// defaults for what it leaves out, the data store is what was last PUT
// (before or after InstanceStart), and both are inspectable, in process
// and in the request record.
func TestTheDoubleKeepsTheMMDS(t *testing.T) {
	f := newFixture(t)
	if got := f.srv.MMDS(); got.Config != nil || got.Data != nil {
		t.Fatalf("a new double holds MMDS %+v", got)
	}
	f.configure()
	f.mustAccept("PUT", "/mmds/config", `{"version":"V2","network_interfaces":["eth0"]}`)
	f.mustAccept("PUT", "/mmds", `{"fireactions":{"vm_id":"vm1"}}`)
	f.mustAccept("PUT", "/actions", instanceStart)
	f.mustAccept("PUT", "/mmds", `{"fireactions":{"vm_id":"vm1","pool":"p"}}`)
	got := f.srv.MMDS()
	want := MMDSConfig{Version: "V2", NetworkInterfaces: []string{"eth0"}, IPv4Address: "169.254.169.254"}
	if got.Config == nil || fmt.Sprint(*got.Config) != fmt.Sprint(want) {
		t.Errorf("MMDS config %+v, want %+v", got.Config, want)
	}
	if string(got.Data) != `{"fireactions":{"vm_id":"vm1","pool":"p"}}` {
		t.Errorf("MMDS data store %s, want the last PUT", got.Data)
	}
	var last Record
	for _, l := range strings.Split(strings.TrimSpace(f.record.String()), "\n") {
		var r Record
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatal(err)
		}
		if r.Path == "/mmds" {
			last = r
		}
	}
	if last.Status != http.StatusNoContent || last.Body != string(got.Data) {
		t.Errorf("the record's last PUT /mmds is %+v", last)
	}
}

// TestUnmodelledRequestsAreRefused: a valid request the double does not
// model is refused, never silently accepted.
func TestUnmodelledRequestsAreRefused(t *testing.T) {
	f := newFixture(t)
	code, fault := f.do("PUT", "/balloon", `{"amount_mib":1,"deflate_on_oom":false}`)
	if code != http.StatusBadRequest || !strings.Contains(fault, "not modelled") {
		t.Fatalf("PUT /balloon: %d %q", code, fault)
	}
}

// TestBootConfigFromRequests: what InstanceStart boots is what was
// configured, with paths resolved in the chroot the double stands in for,
// and the root drive first.
func TestBootConfigFromRequests(t *testing.T) {
	root := t.TempDir()
	for _, p := range []string{"vmlinux", "initrd", "rootfs.ext4", "scratch.ext4"} {
		os.WriteFile(filepath.Join(root, p), []byte(p), 0o644)
	}
	var booted BootConfig
	srv := NewServer(Options{Spec: LoadSpec(t), ID: "vm1", Root: root, OpenTAP: func(string) error { return nil },
		Boot: func(c BootConfig) error { booted = c; return nil }})
	f := &fixture{t: t, srv: srv}
	f.mustAccept("PUT", "/boot-source", `{"kernel_image_path":"/vmlinux","initrd_path":"initrd","boot_args":"console=ttyS0"}`)
	f.mustAccept("PUT", "/machine-config", `{"vcpu_count":2,"mem_size_mib":256,"smt":false}`)
	f.mustAccept("PUT", "/network-interfaces/eth0", `{"iface_id":"eth0","host_dev_name":"fatap0"}`)
	f.mustAccept("PUT", "/drives/scratch", `{"drive_id":"scratch","path_on_host":"/scratch.ext4","is_root_device":false,"is_read_only":false}`)
	f.mustAccept("PUT", "/drives/rootfs", `{"drive_id":"rootfs","path_on_host":"/rootfs.ext4","is_root_device":true,"is_read_only":true}`)
	if code, fault := f.do("PUT", "/drives/other", `{"drive_id":"other","path_on_host":"/rootfs.ext4","is_root_device":true,"is_read_only":true}`); code != 400 || !strings.Contains(fault, "root block device already exists") {
		t.Errorf("a second root drive: %d %q", code, fault)
	}
	if code, _ := f.do("PUT", "/boot-source", `{"kernel_image_path":"`+filepath.Join(root, "vmlinux")+`"}`); code != 400 {
		t.Error("a host path was accepted by a jailed VMM")
	}
	f.mustAccept("PUT", "/actions", instanceStart)
	if booted.Kernel != filepath.Join(root, "vmlinux") || booted.Initrd != filepath.Join(root, "initrd") ||
		booted.VCPUs != 2 || booted.MemoryMiB != 256 || len(booted.NICs) != 1 || booted.NICs[0].TAP != "fatap0" {
		t.Errorf("booted %+v", booted)
	}
	if len(booted.Drives) != 2 || booted.Drives[0].ID != "rootfs" || !booted.Drives[0].Root || !booted.Drives[0].ReadOnly {
		t.Errorf("drives %+v, want the read-only root first", booted.Drives)
	}
	args := strings.Join((&QEMU{}).Args(booted), " ")
	for _, want := range []string{"root=/dev/vda ro", "virtio-blk-device,drive=d0", "readonly=on", "readonly=off", "-action shutdown=pause", "-device i8042"} {
		if !strings.Contains(args, want) {
			t.Errorf("QEMU arguments lack %q: %s", want, args)
		}
	}
}

// TestDrivesShowFirecrackersSerial: the guest reads each drive's serial
// as Firecracker makes it, from the backing file the VMM opened (st_dev,
// st_rdev and st_ino in decimal, run together, at most 20 bytes), never
// the drive_id, so a guest that looks its disks up by drive_id fails here
// as on Firecracker.
func TestDrivesShowFirecrackersSerial(t *testing.T) {
	root := t.TempDir()
	for _, p := range []string{"vmlinux", "image.erofs", "disk.ext4"} {
		os.WriteFile(filepath.Join(root, p), []byte(p), 0o644)
	}
	var booted BootConfig
	srv := NewServer(Options{Spec: LoadSpec(t), ID: "vm1", Root: root, OpenTAP: func(string) error { return nil },
		Boot: func(c BootConfig) error { booted = c; return nil }})
	f := &fixture{t: t, srv: srv}
	f.mustAccept("PUT", "/boot-source", `{"kernel_image_path":"/vmlinux"}`)
	f.mustAccept("PUT", "/drives/fa_image", `{"drive_id":"fa_image","path_on_host":"/image.erofs","is_root_device":false,"is_read_only":true}`)
	f.mustAccept("PUT", "/drives/fa_writable", `{"drive_id":"fa_writable","path_on_host":"/disk.ext4","is_root_device":false,"is_read_only":false}`)
	f.mustAccept("PUT", "/actions", instanceStart)

	args := strings.Join((&QEMU{}).Args(booted), " ")
	for _, file := range []string{"image.erofs", "disk.ext4"} {
		var st syscall.Stat_t
		if err := syscall.Stat(filepath.Join(root, file), &st); err != nil {
			t.Fatal(err)
		}
		want := fmt.Sprintf("%d%d%d", st.Dev, st.Rdev, st.Ino)
		want = want[:min(len(want), 20)]
		if !strings.Contains(args, ",serial="+want) {
			t.Errorf("%s's drive does not show the guest serial %q: %s", file, want, args)
		}
	}
	if strings.Contains(args, "serial=fa_") {
		t.Errorf("a drive_id is given to the guest as a serial: %s", args)
	}
	long := &unix.Stat_t{Dev: 66305, Rdev: 0, Ino: 123456789012345678}
	if got := BlockID(long); got != "66305012345678901234" {
		t.Errorf("BlockID(dev 66305, ino 123456789012345678) = %q, want its first 20 bytes 66305012345678901234", got)
	}
}
