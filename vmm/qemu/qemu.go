// Package qemu is the QEMU `-M microvm` driver of the vmm seam: the VMM
// that runs on hosts without Firecracker, and under TCG on hosts without a
// usable KVM. Acceleration is detected (a real vCPU test), not configured,
// unless the configuration insists.
package qemu

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"

	"github.com/nixos-fireactions/nixos-fireactions/vmm"
	"github.com/nixos-fireactions/nixos-fireactions/vmm/process"
)

// Accel is how QEMU runs guest code.
type Accel string

const (
	AccelKVM Accel = "kvm"
	AccelTCG Accel = "tcg"
)

// Driver starts QEMU microvm guests.
type Driver struct {
	Binary string
	Accel  Accel
	// TSCkHz is the rate a TCG guest's TSC runs at, the host's
	// (HostTSCkHz); 0: 2.6 GHz assumed. Under KVM it is not used.
	TSCkHz int
}

var _ vmm.Hypervisor = (*Driver)(nil)

// Name implements vmm.Hypervisor.
func (d *Driver) Name() string { return "qemu" }

// ProcessName is the -name QEMU is given; recovery finds VMs by it.
func ProcessName(vmID string) string { return "fireactions-" + vmID }

// AccelCmdline is what the kernel command line needs for the driver's
// acceleration: under TCG the rate of the guest's TSC, which is the
// host's (see tsc.go), nothing under KVM.
func (d *Driver) AccelCmdline() string {
	if d.Accel != AccelTCG {
		return ""
	}
	khz := d.TSCkHz
	if khz == 0 {
		khz = fallbackTSCkHz
	}
	return tcgCmdline(khz)
}

// Args is the QEMU command line for spec.
func (d *Driver) Args(spec vmm.Spec) []string {
	cmdline := "console=ttyS0 reboot=k panic=-1 quiet"
	if hint := d.AccelCmdline(); hint != "" {
		cmdline += " " + hint
	}
	if spec.Cmdline != "" {
		cmdline += " " + spec.Cmdline
	}
	return d.CommandLine(spec, cmdline)
}

// cpu is the -cpu of the driver's guests: the host's under KVM, the most
// TCG emulates otherwise.
func (d *Driver) cpu() string {
	if d.Accel != AccelTCG {
		return "host"
	}
	return "max"
}

// CommandLine is the QEMU command line booting spec with the kernel
// command line given whole. The board is a microvm with ACPI (devices and
// power-off), mem-merge=off (a host with KSM on merges no page of the
// guest's with another VM's: no cross-VM side channel through the merged
// pages' copy-on-write; a memory backend inherits the setting) and an
// i8042 keyboard controller, whose reset line, with
// reboot=k and -no-reboot, ends QEMU as soon as the guest restarts. A spec
// without an initramfs or a TAP gets neither. Args uses it; so does the
// Firecracker test double, which boots what Firecracker was asked to.
func (d *Driver) CommandLine(spec vmm.Spec, kernelCmdline string) []string {
	board := "microvm,acpi=on,mem-merge=off"
	if spec.MemoryFile != "" {
		board += ",memory-backend=" + memoryID
	}
	args := []string{
		"-name", ProcessName(spec.ID),
		"-M", board,
		"-accel", string(d.Accel),
		"-cpu", d.cpu(),
		"-smp", strconv.Itoa(spec.VCPUs),
		"-m", strconv.Itoa(spec.MemoryMiB),
		"-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
		"-serial", "stdio",
		"-device", "i8042",
		"-kernel", spec.Kernel,
		"-append", kernelCmdline,
	}
	args = append(args, memoryArgs(spec)...)
	if spec.Initramfs != "" {
		args = append(args, "-initrd", spec.Initramfs)
	}
	if spec.TAP != "" {
		nic := "virtio-net-device,netdev=n0"
		if spec.MAC != "" {
			nic += ",mac=" + spec.MAC
		}
		args = append(args,
			"-netdev", "tap,id=n0,ifname="+spec.TAP+",script=no,downscript=no",
			"-device", nic)
	}
	args = append(args, driveArgs(spec.Drives)...)
	return append(args, warmArgs(spec)...)
}

// initrdFD is the initramfs as QEMU opens it: the file Start passes it
// open as its fd 3. A restore's fd 3 is its kernel's boot header
// (restoreKernel), and it has no initramfs.
const (
	firstFD  = "/dev/fd/3"
	initrdFD = firstFD
)

// Start implements vmm.Hypervisor.
func (d *Driver) Start(ctx context.Context, spec vmm.Spec) (vmm.Machine, error) {
	if spec.VCPUs < 1 || spec.MemoryMiB < 64 || spec.Kernel == "" || spec.Initramfs == "" || spec.TAP == "" {
		return nil, fmt.Errorf("qemu: vm %s: incomplete spec", spec.ID)
	}
	// The serial console (-serial stdio) goes to a keeper that holds the
	// log within its cap.
	console, err := vmm.OpenConsole(spec.ConsoleLog, spec.ConsoleMaxBytes)
	if err != nil {
		return nil, fmt.Errorf("qemu: vm %s: %w", spec.ID, err)
	}
	defer console.Close()
	// QEMU maps the initramfs while it sets the machine up, after Start
	// has returned: it gets the file open, as its fd 3, so the caller may
	// remove the file's name at once (see vmm.Hypervisor). The machine
	// keeps it open too, to empty it once the guest has read it.
	// A template's initramfs (a VM with an identity channel) is the
	// pool's, shared and without a secret: read only, never emptied.
	// A restore loads none: its fd 3 is its kernel's boot header
	// (bootheader.go), for its guest runs from the template's memory.
	var first *os.File
	if spec.Restore != "" {
		first, err = restoreKernel(spec.Kernel)
	} else {
		mode := os.O_RDWR
		if spec.Identity != "" {
			mode = os.O_RDONLY
		}
		first, err = os.OpenFile(spec.Initramfs, mode, 0)
		if err != nil {
			err = fmt.Errorf("open initramfs: %w", err)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("qemu: vm %s: %w", spec.ID, err)
	}
	files := []*os.File{first}
	if err := prepareMemory(spec); err != nil {
		first.Close()
		return nil, fmt.Errorf("qemu: vm %s: %w", spec.ID, err)
	}
	if spec.Restore != "" {
		defer first.Close() // QEMU holds its own copy once started
		state, err := os.Open(spec.Restore)
		if err != nil {
			return nil, fmt.Errorf("qemu: vm %s: open saved state: %w", spec.ID, err)
		}
		defer state.Close() // QEMU holds its own copy once started
		files = append(files, state)
	}
	held := spec
	held.Initramfs = initrdFD
	if spec.Restore != "" {
		held.Kernel, held.Initramfs = firstFD, ""
	}
	// The pid file keeps the VM's directory on QEMU's command line, where
	// the initramfs's path was: ps shows which VM files a QEMU is of.
	args := append(d.Args(held), "-pidfile", filepath.Join(spec.Dir, "qemu.pid"))
	cmd := exec.Command(d.Binary, args...)
	cmd.ExtraFiles = files
	cmd.Dir = spec.Dir
	cmd.Stdin = nil
	cmd.Stdout = console
	cmd.Stderr = console
	m := &machine{}
	if spec.Restore == "" {
		m.initrd = first
	}
	if spec.Identity != "" {
		m.dir, m.identity = spec.Dir, spec.Identity
		m.fileMemory = spec.MemoryFile != ""
	}
	p, err := process.Start(cmd, "qemu", m.closeInitrd)
	if err != nil {
		if m.initrd != nil {
			m.initrd.Close()
		}
		return nil, fmt.Errorf("qemu: vm %s: start %s: %w", spec.ID, d.Binary, err)
	}
	if spec.Identity != "" {
		m.closeInitrd() // nothing to release: the pool's, not the VM's
	}
	m.Started = p
	return m, nil
}

// machine is a QEMU the driver started, with its initramfs held open
// until the guest has read it.
type machine struct {
	*process.Started
	mu     sync.Mutex
	initrd *os.File // nil once released or QEMU has exited

	dir      string // the VM's directory, holding qmp.sock; "" without Spec.Identity
	identity string // the identity channel's socket
	// fileMemory: the guest's RAM is Spec.MemoryFile (shared by a
	// template, private to a restore); its migration stream skips it.
	fileMemory bool
}

var _ vmm.Warm = (*machine)(nil)

var _ vmm.BootReleaser = (*machine)(nil)

// ReleaseBoot implements vmm.BootReleaser: QEMU maps the initramfs and
// serves it to the guest's firmware (fw_cfg), which copies it into guest
// memory as the guest starts; once the guest runs, emptying the file
// frees its disk although QEMU still maps it.
func (m *machine) ReleaseBoot() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.initrd == nil {
		return nil
	}
	err := m.initrd.Truncate(0)
	m.initrd.Close()
	m.initrd = nil
	if err != nil {
		return fmt.Errorf("qemu: empty the booted initramfs: %w", err)
	}
	return nil
}

func (m *machine) closeInitrd() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.initrd != nil {
		m.initrd.Close()
		m.initrd = nil
	}
}
