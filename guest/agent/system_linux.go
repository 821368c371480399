package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
	"golang.org/x/sys/unix"
)

// Linux returns the System of a real guest, where the agent is PID 1.
func Linux() System { return linuxSystem{} }

type linuxSystem struct{}

func (linuxSystem) Mount(source, target, fstype string, flags uintptr, data string) error {
	return unix.Mount(source, target, fstype, flags, data)
}

func (linuxSystem) LoadModule(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.FinitModule(int(f.Fd()), "", 0); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("finit_module: %w", err)
	}
	return nil
}

func (linuxSystem) SetHostname(name string) error { return unix.Sethostname([]byte(name)) }

func (linuxSystem) ConfigureNetwork(ctx context.Context, n agentproto.Network) error {
	return configureNetwork(ctx, n, LinkWait)
}

func (linuxSystem) Chown(path string, uid, gid int) error { return os.Lchown(path, uid, gid) }

func (linuxSystem) StartProcess(cmd *exec.Cmd) error { return cmd.Start() }

// WaitProcess reaps every child until the runner's own status arrives: as
// PID 1 the agent inherits the job's orphans, which would otherwise stay
// zombies.
func (linuxSystem) WaitProcess(cmd *exec.Cmd) (syscall.WaitStatus, error) {
	defer cmd.Process.Release()
	return reapUntil(cmd.Process.Pid)
}

func reapUntil(pid int) (syscall.WaitStatus, error) {
	for {
		var ws syscall.WaitStatus
		got, err := syscall.Wait4(-1, &ws, 0, nil)
		switch {
		case errors.Is(err, syscall.EINTR):
			continue
		case err != nil:
			return 0, fmt.Errorf("wait4 for pid %d: %w", pid, err)
		case got == pid:
			return ws, nil
		}
	}
}

func (linuxSystem) LiftProcessLimit(pid int) error {
	inf := unix.Rlimit{Cur: unix.RLIM_INFINITY, Max: unix.RLIM_INFINITY}
	return unix.Prlimit(pid, unix.RLIMIT_NPROC, &inf, nil)
}

func (linuxSystem) KillUser(procDir string, uid int) int {
	return killUser(procDir, uid, func(pid int) error { return syscall.Kill(pid, syscall.SIGKILL) })
}

// SwitchRoot is switch_root's sequence: the initramfs cannot be
// unmounted, so the new root is moved over it and the agent chroots in.
// Go's threads share one root, so the whole agent moves.
func (linuxSystem) SwitchRoot(newRoot string) (string, error) {
	if err := unix.Chdir(newRoot); err != nil {
		return "", fmt.Errorf("chdir %s: %w", newRoot, err)
	}
	if err := unix.Mount(newRoot, "/", "", unix.MS_MOVE, ""); err != nil {
		return "", fmt.Errorf("move %s to /: %w", newRoot, err)
	}
	if err := unix.Chroot("."); err != nil {
		return "", fmt.Errorf("chroot: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return "", fmt.Errorf("chdir /: %w", err)
	}
	return "/", nil
}

// IdentityPortWait bounds the wait for the identity port to appear once
// the virtio-serial driver is loaded.
const IdentityPortWait = 10 * time.Second

func (linuxSystem) AwaitIdentity(ctx context.Context) ([]byte, IdentityAnswer, error) {
	if b, _ := os.ReadFile("/proc/cmdline"); identityOverVsock(string(b)) {
		return awaitVsockIdentity(ctx)
	}
	deadline := time.Now().Add(IdentityPortWait)
	for {
		dev, err := IdentityDevice("/")
		if err == nil {
			return ReadIdentityLine(ctx, dev)
		}
		if time.Now().After(deadline) {
			return nil, nil, fmt.Errorf("%w within %v", err, IdentityPortWait)
		}
		select {
		case <-ctx.Done():
			return nil, nil, fmt.Errorf("waiting for the identity port: %w", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (linuxSystem) Reseed(seed []byte) error     { return Reseed(seed) }
func (linuxSystem) SetClock(now time.Time) error { return SetClock(now) }

// SetMAC waits (at most LinkWait) for the interface, whose driver may
// be among the modules the VM's config adds to the template's.
func (linuxSystem) SetMAC(iface, mac string) error {
	if _, err := waitLink(context.Background(), iface, LinkWait); err != nil {
		return fmt.Errorf("set MAC: %w", err)
	}
	return SetMAC(iface, mac)
}

func (linuxSystem) Uptime() time.Duration { return Uptime() }

// Uptime is CLOCK_BOOTTIME: in a guest, the time since its kernel started.
func Uptime() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}

// PowerOff syncs and ends the VM by restarting it: both VMMs take a
// reset as the end (reboot=k through the i8042; QEMU runs with
// -no-reboot), while a power-off would only halt a Firecracker guest,
// which has no ACPI power-off, and leave its VMM running. If the kernel
// refuses the restart, it powers off. It never returns: PID 1 returning
// panics the kernel.
func (linuxSystem) PowerOff() {
	unix.Sync()
	err := unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART)
	fmt.Fprintf(os.Stdout, "restart failed (%v); powering off\n", err)
	err = unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	fmt.Fprintf(os.Stdout, "power off failed (%v); halting here\n", err)
	for {
		time.Sleep(time.Hour)
	}
}
