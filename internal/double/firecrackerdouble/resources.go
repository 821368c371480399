package firecrackerdouble

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// BootConfig is what InstanceStart boots, with host paths.
type BootConfig struct {
	ID        string
	Kernel    string
	Initrd    string
	BootArgs  string
	VCPUs     int
	MemoryMiB int
	SMT       bool
	NICs      []NIC
	Drives    []Drive // the root drive first, as Firecracker attaches them
	Vsock     *VsockConfig
}

// NIC is a configured network interface.
type NIC struct {
	ID, TAP, MAC string
}

// Drive is a configured block device.
type Drive struct {
	ID       string
	Path     string
	ReadOnly bool
	Root     bool
	// Serial is the id the guest reads from the device (virtio-blk
	// VIRTIO_BLK_T_GET_ID, /sys/block/vdX/serial): Firecracker's, made
	// from the backing file (see BlockID), never the drive_id.
	Serial string
}

// virtioBlkIDBytes is VIRTIO_BLK_ID_BYTES: the longest block device id.
const virtioBlkIDBytes = 20

// BlockID is the virtio block device id Firecracker gives a drive backed
// by a file with stat st: its st_dev, st_rdev and st_ino in decimal, run
// together, cut to 20 bytes (Firecracker's build_device_id and
// build_disk_image_id in src/vmm/src/devices/virtio/block/virtio/device.rs,
// "how kvmtool does it"), computed when the drive is configured.
func BlockID(st *unix.Stat_t) string {
	id := fmt.Sprintf("%d%d%d", st.Dev, st.Rdev, st.Ino)
	return id[:min(len(id), virtioBlkIDBytes)]
}

// hostPath is where a path the VMM was given is on the host: inside the
// chroot when jailed, relative to the chroot's root like the jailed
// process's working directory.
func (s *Server) hostPath(p string) string {
	if s.opt.Root == "" {
		return p
	}
	return filepath.Join(s.opt.Root, filepath.Clean("/"+p))
}

// openable checks a file opens for reading (and writing), as the VMM's
// user, the way Firecracker opens it when the resource is configured.
func (s *Server) openable(p string, write bool) error {
	_, err := s.open(p, write)
	return err
}

// open opens a file as openable does and returns the open file's stat.
func (s *Server) open(p string, write bool) (*unix.Stat_t, error) {
	flag := os.O_RDONLY
	if write {
		flag = os.O_RDWR
	}
	f, err := os.OpenFile(s.hostPath(p), flag, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return nil, err
	}
	return &st, nil
}

func (s *Server) putBootSource(body []byte) error {
	var b struct {
		KernelImagePath string  `json:"kernel_image_path"`
		InitrdPath      *string `json:"initrd_path"`
		BootArgs        *string `json:"boot_args"`
	}
	if err := json.Unmarshal(body, &b); err != nil {
		return err
	}
	if err := s.openable(b.KernelImagePath, false); err != nil {
		return fmt.Errorf("The kernel file cannot be opened: %w", err)
	}
	vm := s.vm
	vm.Kernel, vm.Initrd, vm.BootArgs = s.hostPath(b.KernelImagePath), "", ""
	if b.InitrdPath != nil {
		if err := s.openable(*b.InitrdPath, false); err != nil {
			return fmt.Errorf("The initrd file cannot be opened due to invalid path or invalid permissions. %w", err)
		}
		vm.Initrd = s.hostPath(*b.InitrdPath)
	}
	if b.BootArgs != nil {
		vm.BootArgs = *b.BootArgs
	} else {
		// Firecracker's default command line, which has no console.
		vm.BootArgs = "reboot=k panic=1 pci=off nomodule 8250.nr_uarts=0 i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd"
	}
	s.vm, s.hasKernel = vm, true
	return nil
}

func (s *Server) putMachineConfig(body []byte, patch bool) error {
	var m struct {
		VCPUCount  *int  `json:"vcpu_count"`
		MemSizeMiB *int  `json:"mem_size_mib"`
		SMT        *bool `json:"smt"`
	}
	if err := json.Unmarshal(body, &m); err != nil {
		return err
	}
	vm := s.vm
	if !patch {
		vm.SMT = false // PUT resets what it leaves out
	}
	if m.VCPUCount != nil {
		vm.VCPUs = *m.VCPUCount
	}
	if m.MemSizeMiB != nil {
		vm.MemoryMiB = *m.MemSizeMiB
	}
	if m.SMT != nil {
		vm.SMT = *m.SMT
	}
	if vm.MemoryMiB <= 0 {
		return errors.New("The memory size (MiB) is either 0, or not a multiple of the configured page size.")
	}
	if vm.SMT && vm.VCPUs > 1 && vm.VCPUs%2 != 0 {
		return errors.New("The vCPU number is invalid! The vCPU number can only be 1 or an even number when SMT is enabled.")
	}
	s.vm = vm
	return nil
}

func (s *Server) putNetworkInterface(pathID string, body []byte) error {
	var n struct {
		IfaceID     string `json:"iface_id"`
		HostDevName string `json:"host_dev_name"`
		GuestMAC    string `json:"guest_mac"`
	}
	if err := json.Unmarshal(body, &n); err != nil {
		return err
	}
	if n.IfaceID != pathID {
		return errors.New(faultIDMismatch)
	}
	if n.GuestMAC != "" {
		if hw, err := net.ParseMAC(n.GuestMAC); err != nil || len(hw) != 6 {
			return fmt.Errorf("An error occurred when deserializing the json body of a request: invalid MAC address %q.", n.GuestMAC)
		}
	}
	if err := s.opt.OpenTAP(n.HostDevName); err != nil {
		return fmt.Errorf("Could not create the network device: Open tap device failed: %w", err)
	}
	nics := make([]NIC, 0, len(s.vm.NICs)+1)
	for _, old := range s.vm.NICs {
		if old.ID != n.IfaceID {
			nics = append(nics, old)
		}
	}
	s.vm.NICs = append(nics, NIC{ID: n.IfaceID, TAP: n.HostDevName, MAC: n.GuestMAC})
	return nil
}

func (s *Server) putDrive(pathID string, body []byte) error {
	var d struct {
		DriveID      string  `json:"drive_id"`
		PathOnHost   *string `json:"path_on_host"`
		IsRootDevice bool    `json:"is_root_device"`
		IsReadOnly   *bool   `json:"is_read_only"`
	}
	if err := json.Unmarshal(body, &d); err != nil {
		return err
	}
	if d.DriveID != pathID {
		return errors.New(faultIDMismatch)
	}
	if d.PathOnHost == nil || d.IsReadOnly == nil {
		return errors.New("firecrackerdouble: only virtio-block drives (path_on_host and is_read_only set) are modelled")
	}
	st, err := s.open(*d.PathOnHost, !*d.IsReadOnly)
	if err != nil {
		return fmt.Errorf("Unable to create the block device: %w", err)
	}
	var drives []Drive
	for _, old := range s.vm.Drives {
		if old.ID == d.DriveID {
			continue
		}
		if old.Root && d.IsRootDevice {
			return errors.New("A root block device already exists!")
		}
		drives = append(drives, old)
	}
	nd := Drive{ID: d.DriveID, Path: s.hostPath(*d.PathOnHost), ReadOnly: *d.IsReadOnly, Root: d.IsRootDevice, Serial: BlockID(st)}
	if nd.Root {
		drives = append([]Drive{nd}, drives...)
	} else {
		drives = append(drives, nd)
	}
	s.vm.Drives = drives
	return nil
}

// openTAP attaches to a TAP as Firecracker does when a network interface
// is configured, with its flags, as the VMM's user, and lets go of it.
func openTAP(name string) error {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return err
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}
