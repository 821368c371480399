// Package vmm is the seam between the pool manager and a virtual machine
// monitor. A driver (QEMU microvm here, Firecracker in production) starts a
// VM from a Spec and hands back a Machine to wait on or stop; nothing else
// in the orchestrator knows which monitor runs the guest.
package vmm

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
)

// Spec is one VM, whatever the monitor.
type Spec struct {
	ID         string // VM id; also names the process for recovery
	Dir        string // per-VM directory for sockets and scratch files
	Kernel     string
	Initramfs  string
	Cmdline    string // extra kernel arguments, appended
	VCPUs      int
	MemoryMiB  int
	TAP        string // host TAP device the guest's eth0 is attached to
	MAC        string
	ConsoleLog string // file the serial console is written to
	// ConsoleMaxBytes caps ConsoleLog (0: DefaultConsoleMaxBytes); see
	// OpenConsole.
	ConsoleMaxBytes int64
	Drives          []Drive // virtio block devices, in attachment order
	// Slot is the VM's number on this host, unique among its live VMs and
	// stable across an orchestrator restart: its address's offset in the
	// VMs' network. The Firecracker jailer runs VM n as uid/gid base+n.
	Slot int
	// Metadata is non-secret facts about the VM (vm_id, pool, host_id) a
	// driver may offer the guest, e.g. through Firecracker's MMDS. Never a
	// token or credential: those reach the guest in its initramfs only.
	Metadata map[string]string
	// Identity, when set, is the host end (a unix socket the monitor
	// listens on) of the VM's identity channel: a virtio-serial port
	// (QEMU) or a vsock port (Firecracker, whose socket is the vsock
	// device's, in the VM's own directory or jail) the guest agent waits
	// on for its config when the VM is a warm start's template or a
	// restore of one (see package warmstart).
	Identity string
	// Restore, when set, is a saved state (a warmstart template's) the
	// VM is restored from instead of booted: same kernel, initramfs,
	// drives (IDs, order), memory and vCPUs as the template, with its own
	// TAP, MAC, disks and identity channel.
	Restore string
	// MemoryFile, for a driver that keeps guest RAM in a file (QEMU), is
	// that file. A template's (Restore empty) is mapped shared: the guest's
	// memory is the file, and SaveState writes device state only. A
	// restore's is its template's, mapped private (copy on write): the
	// restores of one template share its pages in the host's page cache
	// until each writes its own, and none writes the file. A driver
	// whose guest RAM is its own while it runs (Firecracker) writes a
	// template's RAM there at SaveState, and a restore loads it from
	// there (mapped private). Empty: the saved state holds the RAM, or
	// the driver puts it beside the state.
	MemoryFile string
}

// Warm is a Machine of a driver that saves and restores guests.
type Warm interface {
	// SaveState stops the guest and writes its memory and device state
	// to dst; the monitor stays, stopped, until killed.
	SaveState(ctx context.Context, dst string) error
	// Resume runs a guest restored from Spec.Restore once the state is
	// loaded; an error is a restore that failed (the VM must be killed
	// and booted cold).
	Resume(ctx context.Context) error
	// SendIdentity writes b, one line, to the guest's identity channel
	// and waits for the guest's answer; a guest that refused it (could
	// not apply it) is an error wrapping ErrIdentityRefused.
	SendIdentity(ctx context.Context, b []byte) error
}

// ErrIdentityRefused is SendIdentity's error when the guest read its
// identity and answered that it could not apply it
// (agentproto.IdentityRefused), told apart from a guest that did not
// answer: the restore failed all the same (the VM is killed and boots
// cold), but the guest ran and said why on its console.
var ErrIdentityRefused = errors.New("the guest refused its identity")

// IdentityAnswer is what the guest's answer to its identity says, the
// line as a driver read it (its newline on or off): nil for the
// acknowledgement (agentproto.IdentityAck), ErrIdentityRefused for the
// refusal (agentproto.IdentityRefused), and for any other line, or none,
// an error that says what the guest answered. Every driver's
// SendIdentity reads a non-blank answer through it; a blank one is the
// driver's to judge (Firecracker's vsock sends the identity again).
func IdentityAnswer(line string) error {
	switch answer := strings.TrimSpace(line); answer {
	case agentproto.IdentityAck:
		return nil
	case agentproto.IdentityRefused:
		return ErrIdentityRefused
	case "":
		return errors.New("no acknowledgement from the guest: no answer")
	default:
		return fmt.Errorf("no acknowledgement from the guest: it answered %q", answer)
	}
}

// Saver is a Hypervisor whose machines are Warm: it starts a Spec with
// Identity (a template) and Restore (a restore of one). The catalog's
// warm-start drivers (catalog.WarmVMMs) are exactly the Savers; the
// daemon's test holds the list to the drivers.
type Saver interface {
	Hypervisor
	// SavesState marks the driver; it does nothing.
	SavesState()
}

// Hypervisor starts VMs.
type Hypervisor interface {
	// Name is the driver's name, e.g. "qemu".
	Name() string
	// Start boots spec and returns once the monitor process runs. When
	// it returns, the monitor holds spec.Initramfs (read into guest
	// memory, or open) and never opens it by its path again, so the
	// caller removes the file then: it holds the runner's credential.
	// Whatever a driver made of it (a jail's link) the driver removes.
	// A monitor that keeps the file open frees its disk at once
	// (Firecracker) or, if its guest reads it after Start, once asked
	// to (a Machine that is a BootReleaser: QEMU).
	//
	// On an error Start returns a nil Machine when no monitor of spec's
	// runs: it failed before starting one (QEMU always does), or killed
	// the one it started. When that kill failed, the monitor may still
	// run, as spec.Slot's user: Start returns it with the error, and the
	// caller kills it (Kill) and keeps what the VM holds, its slot above
	// all, until a Kill succeeds, as for any Machine whose Kill failed.
	Start(ctx context.Context, spec Spec) (Machine, error)
}

// Machine is a running VM.
type Machine interface {
	// PID is the monitor's process id, recorded for crash recovery.
	PID() int
	// Done is closed when the monitor has exited.
	Done() <-chan struct{}
	// Err is why the monitor exited, once Done is closed: nil for a guest
	// that powered off.
	Err() error
	// Kill stops the VM at once and waits for the monitor to exit.
	Kill(ctx context.Context) error
}

// BootReleaser is a Machine whose guest reads its initramfs from the
// monitor after Start (QEMU maps the file; the guest's firmware copies
// it into guest memory as the guest starts): ReleaseBoot, called once
// the guest runs its own userspace (its agent reported), empties the
// file, freeing its disk. The guest must not read it again: a guest
// reset ends the monitor.
type BootReleaser interface {
	ReleaseBoot() error
}

// ErrKilled is the exit error of a VM stopped with Kill.
var ErrKilled = errors.New("vm killed")

// Adopter is implemented by drivers that can take over a monitor process
// a previous run of the orchestrator started (crash recovery).
type Adopter interface {
	// Adopt returns the running VM id whose monitor is pid, or an error
	// when pid is not that VM's monitor any more.
	Adopt(id string, pid int) (Machine, error)
}

// Reaper is implemented by drivers that can end a monitor a previous run
// left, with whatever else the driver made on the host for its VM (the
// Firecracker jailer's chroot and cgroup): start-up cleanup calls Reap for
// each VM a previous run left and does not adopt. Each driver reaps its
// own (see package vmm/process); nothing outside the drivers signals a
// monitor.
type Reaper interface {
	// Reap ends the monitor if pid is still VM id's, then removes what the
	// driver made on the host for that VM.
	Reap(ctx context.Context, id string, pid int) error
}

// Finder is implemented by drivers that can find a VM's running monitor
// by its identity (the VM id it was started with), not by a recorded PID:
// crash recovery uses it for a VM whose record holds no PID yet (the
// monitor started, the record was not written).
type Finder interface {
	// FindMonitor returns the pid of VM id's running monitor, 0 if none.
	FindMonitor(id string) (int, error)
}
