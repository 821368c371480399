package firecrackerdouble

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/nixos-fireactions/nixos-fireactions/vmm"
	"github.com/nixos-fireactions/nixos-fireactions/vmm/qemu"
)

// QEMU boots a double's guest.
type QEMU struct {
	Driver qemu.Driver // binary and acceleration
	Stdout io.Writer   // the guest's serial console: the double's stdout
	Stderr io.Writer   // QEMU's and the double's own messages
}

// Guest is a booted guest.
type Guest struct {
	exited chan struct{}
	err    error
}

// Exited is closed when QEMU has exited.
func (g *Guest) Exited() <-chan struct{} { return g.exited }

// Err is why QEMU exited: nil when the guest reset, which ends
// Firecracker with status 0.
func (g *Guest) Err() error { return g.err }

// Args is the QEMU command line for cfg: the QEMU driver's board, the
// kernel command line Firecracker was given (plus the TCG hint), the first
// NIC and initrd through the driver, further NICs and the drives after it,
// each with the serial Firecracker would give it.
// A reset ends QEMU (-no-reboot); a power-off pauses it (-action
// shutdown=pause), as a halted Firecracker guest. QMP on fd 3, paused
// until the double is listening (-S).
func (q *QEMU) Args(cfg BootConfig) []string {
	cmdline := cfg.BootArgs
	for _, d := range cfg.Drives {
		if d.Root {
			mode := "rw"
			if d.ReadOnly {
				mode = "ro"
			}
			cmdline += " root=/dev/vda " + mode
		}
	}
	if hint := q.Driver.AccelCmdline(); hint != "" {
		cmdline += " " + hint
	}
	spec := vmm.Spec{ID: cfg.ID, Kernel: cfg.Kernel, Initramfs: cfg.Initrd, VCPUs: cfg.VCPUs, MemoryMiB: cfg.MemoryMiB}
	if len(cfg.NICs) > 0 {
		spec.TAP, spec.MAC = cfg.NICs[0].TAP, cfg.NICs[0].MAC
	}
	args := q.Driver.CommandLine(spec, cmdline)
	for i, n := range cfg.NICs[min(1, len(cfg.NICs)):] {
		id := "n" + strconv.Itoa(i+1)
		nic := "virtio-net-device,netdev=" + id
		if n.MAC != "" {
			nic += ",mac=" + n.MAC
		}
		args = append(args, "-netdev", "tap,id="+id+",ifname="+n.TAP+",script=no,downscript=no", "-device", nic)
	}
	for i, d := range cfg.Drives {
		id := "d" + strconv.Itoa(i)
		dev := "virtio-blk-device,drive=" + id
		if d.Serial != "" {
			dev += ",serial=" + d.Serial // digits only: nothing to escape
		}
		args = append(args,
			"-drive", fmt.Sprintf("id=%s,file=%s,format=raw,if=none,readonly=%s", id, d.Path, onOff(d.ReadOnly)),
			"-device", dev)
	}
	return append(args, "-action", "shutdown=pause", "-S", "-chardev", "socket,id=qmp,fd=3", "-mon", "chardev=qmp,mode=control")
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

// Boot starts QEMU and returns once the guest runs. QEMU dies with the
// double (Pdeathsig), so a hard stop of the double's process alone leaves
// no QEMU behind.
func (q *QEMU) Boot(cfg BootConfig) (*Guest, error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("QMP socket pair: %w", err)
	}
	mine, theirs := os.NewFile(uintptr(fds[0]), "qmp"), os.NewFile(uintptr(fds[1]), "qmp-qemu")
	conn, err := net.FileConn(mine)
	mine.Close()
	if err != nil {
		theirs.Close()
		return nil, fmt.Errorf("QMP connection: %w", err)
	}
	extra := []*os.File{theirs}
	if cfg.Initrd != "" {
		mem, err := loadInitrd(cfg.Initrd)
		if err != nil {
			conn.Close()
			theirs.Close()
			return nil, err
		}
		defer mem.Close()
		cfg.Initrd = "/dev/fd/4"
		extra = append(extra, mem)
	}
	cmd := exec.Command(q.Driver.Binary, q.Args(cfg)...)
	cmd.Stdout, cmd.Stderr = q.Stdout, q.Stderr
	cmd.ExtraFiles = extra
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}

	g := &Guest{exited: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		// Pdeathsig fires when the thread that started the child ends:
		// this goroutine keeps its thread until QEMU is gone.
		runtime.LockOSThread()
		err := cmd.Start()
		theirs.Close()
		started <- err
		if err != nil {
			conn.Close()
			return
		}
		g.err = cmd.Wait()
		conn.Close()
		close(g.exited)
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("start %s: %w", q.Driver.Binary, err)
	}
	if err := q.watch(conn); err != nil {
		_ = cmd.Process.Kill()
		<-g.exited
		return nil, err
	}
	return g, nil
}

// watch negotiates QMP, lets the paused guest run, and from then on ends
// QEMU when the guest resets; a guest power-off only pauses it.
func (q *QEMU) watch(conn net.Conn) error {
	r := bufio.NewReader(conn)
	send := func(cmd string) error {
		_, err := fmt.Fprintf(conn, `{"execute":%q}`+"\n", cmd)
		return err
	}
	// Greeting, then a reply to each command.
	if _, err := r.ReadString('\n'); err != nil {
		return fmt.Errorf("QMP greeting: %w", err)
	}
	for _, c := range []string{"qmp_capabilities", "cont"} {
		if err := send(c); err != nil {
			return fmt.Errorf("QMP %s: %w", c, err)
		}
		if err := qmpReply(r); err != nil {
			return fmt.Errorf("QMP %s: %w", c, err)
		}
	}
	go func() {
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			var ev struct {
				Event string `json:"event"`
				Data  struct {
					Reason string `json:"reason"`
				} `json:"data"`
			}
			if json.Unmarshal([]byte(line), &ev) != nil || ev.Event != "SHUTDOWN" {
				continue
			}
			switch ev.Data.Reason {
			case "guest-reset", "guest-panic":
				_ = send("quit")
			case "guest-shutdown":
				fmt.Fprintln(q.Stderr, "firecrackerdouble: the guest powered off; Firecracker has no ACPI power-off, so the guest halts and the VMM runs on")
			}
		}
	}()
	return nil
}

// loadInitrd reads the initrd whole, as Firecracker does at
// InstanceStart into guest memory, here into a memory file QEMU gets as
// its fd 4 (QEMU itself would map the file and read it only when the
// guest's firmware asks): from then on the double, like Firecracker,
// never reads the file again, whatever becomes of it.
func loadInitrd(path string) (*os.File, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load initrd: %w", err)
	}
	fd, err := unix.MemfdCreate("initrd", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("load initrd: %w", err)
	}
	mem := os.NewFile(uintptr(fd), "initrd")
	if _, err := mem.Write(b); err != nil {
		mem.Close()
		return nil, fmt.Errorf("load initrd: %w", err)
	}
	return mem, nil
}

// qmpReply reads up to the reply of a command, skipping events.
func qmpReply(r *bufio.Reader) error {
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return err
		}
		var m map[string]json.RawMessage
		if json.Unmarshal([]byte(line), &m) != nil {
			continue
		}
		if e, ok := m["error"]; ok {
			return errors.New(strings.TrimSpace(string(e)))
		}
		if _, ok := m["return"]; ok {
			return nil
		}
	}
}
