package agent

import (
	"context"
	"os/exec"
	"syscall"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
)

// IdentityAnswer tells the host on the identity channel whether the
// identity was applied (agentproto.IdentityAck) or not
// (agentproto.IdentityRefused), and closes the channel. The host waits
// for it (boundedly), and counts the restore as good only on the ack.
type IdentityAnswer func(applied bool) error

// System is every effect the agent has on the kernel, so that tests on the
// host can run the boot sequence with a fake. Paths are host paths (already
// joined with Agent.Root).
type System interface {
	// Mount is mount(2).
	Mount(source, target, fstype string, flags uintptr, data string) error
	// LoadModule loads the kernel module file at path; a module already
	// loaded is not an error.
	LoadModule(path string) error
	// SetHostname is sethostname(2).
	SetHostname(name string) error
	// ConfigureNetwork brings up lo and the guest's interface (waiting for
	// it to appear) with its address, MTU and default route.
	ConfigureNetwork(ctx context.Context, n agentproto.Network) error
	// Chown is lchown(2).
	Chown(path string, uid, gid int) error
	// StartProcess starts cmd, which is fully prepared (credentials and
	// session in cmd.SysProcAttr).
	StartProcess(cmd *exec.Cmd) error
	// WaitProcess waits for cmd's process to end and returns its status.
	// As PID 1 it also reaps the orphans that the kernel hands to init.
	WaitProcess(cmd *exec.Cmd) (syscall.WaitStatus, error)
	// LiftProcessLimit sets RLIMIT_NPROC of process pid to unlimited:
	// the runner's, whose job is bounded by its cgroup instead.
	LiftProcessLimit(pid int) error
	// KillUser SIGKILLs every process of the user uid, as listed under
	// procDir (the guest's /proc), until none is left (see killUser), and
	// returns how many it killed.
	KillUser(procDir string, uid int) int
	// SwitchRoot makes the mounted newRoot the root (switch_root: move it
	// onto / and chroot into it) and returns where the agent now sees the
	// guest's files: "/" in a guest.
	SwitchRoot(newRoot string) (string, error)
	// AwaitIdentity waits for the identity port (agentproto.IdentityPort,
	// or vsock port agentproto.IdentityVsockPort when the kernel command
	// line names that channel: Firecracker) and returns the one line the
	// host writes on it, not yet answered: the channel stays open until
	// the caller calls answer, once, when it has applied the identity or
	// failed to.
	AwaitIdentity(ctx context.Context) (line []byte, answer IdentityAnswer, err error)
	// Reseed credits seed to the kernel's entropy pool and reseeds its
	// CRNG.
	Reseed(seed []byte) error
	// SetClock sets the wall clock.
	SetClock(now time.Time) error
	// SetMAC sets iface's hardware address.
	SetMAC(iface, mac string) error
	// Uptime is CLOCK_BOOTTIME: the time since the kernel started.
	Uptime() time.Duration
	// PowerOff syncs and ends the VM. In a guest it does not return.
	PowerOff()
}
