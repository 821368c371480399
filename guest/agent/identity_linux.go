package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
	"unsafe"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// A restored VM shares its template's memory: the kernel's random pools
// and CRNG state, its clock and its interface's MAC. These are the
// agent's means to make each of them the VM's own once its Identity
// arrives (see package warmstart on the host).

// Linux random(4) ioctls (linux/random.h); x/sys/unix names neither.
const (
	rndAddEntropy = 0x40085203 // _IOW('R', 0x03, int[2])
	rndReseedCRNG = 0x5207     // _IO('R', 0x07)
)

// IdentityDevice is the /dev node of the virtio-serial port named
// agentproto.IdentityPort, under root.
func IdentityDevice(root string) (string, error) {
	names, _ := filepath.Glob(filepath.Join(root, "sys/class/virtio-ports/*/name"))
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err == nil && strings.TrimSpace(string(b)) == agentproto.IdentityPort {
			return filepath.Join(root, "dev", filepath.Base(filepath.Dir(n))), nil
		}
	}
	return "", fmt.Errorf("no virtio-serial port named %s", agentproto.IdentityPort)
}

// ReadIdentityLine waits for one line on dev, at most agentproto.MaxIdentity
// bytes, and returns it with the answer that acknowledges or refuses it
// (see IdentityAnswer): QEMU reads the host's socket only while the guest
// has the port open, so the host keeps its end until the guest answers,
// and the port stays open until then. A port whose host end is not
// connected reads as end of file: the agent polls until the host
// connects (the template waits here when it is saved). The port stays
// open throughout: Linux discards what a port holds when it is closed, so
// a line QEMU handed over just after a read saw no host would be lost if
// the agent closed and reopened the port between polls.
func ReadIdentityLine(ctx context.Context, dev string) ([]byte, IdentityAnswer, error) {
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("identity port: %w", err)
	}
	line, err := readPortLine(ctx, f)
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return line, answerOn(f), nil
}

// readPortLine is ReadIdentityLine's wait for the line on the open port.
func readPortLine(ctx context.Context, f *os.File) ([]byte, error) {
	var line []byte
	buf := make([]byte, 64<<10)
	defer clear(buf) // one copy fewer of the line (the runner's credential) left behind
	for {
		n, err := f.Read(buf)
		line = append(line, buf[:n]...)
		if i := bytes.IndexByte(line, '\n'); i >= 0 {
			return line[:i], nil
		}
		if len(line) > agentproto.MaxIdentity {
			return nil, fmt.Errorf("identity longer than %d bytes", agentproto.MaxIdentity)
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("identity port: %w", err)
		}
		if n > 0 {
			continue
		}
		line = line[:0] // no host now: what one that went away left unfinished is not its line
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for the identity: %w", ctx.Err())
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// answerOn is the IdentityAnswer on the channel c: one line, then c is
// closed.
func answerOn(c io.WriteCloser) IdentityAnswer {
	return func(applied bool) error {
		reply := agentproto.IdentityRefused
		if applied {
			reply = agentproto.IdentityAck
		}
		_, err := c.Write([]byte(reply + "\n"))
		if cerr := c.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("identity channel: answering %s: %w", reply, err)
		}
		return nil
	}
}

// Reseed credits seed to the kernel's input pool (RNDADDENTROPY) and
// reseeds the CRNG from it (RNDRESEEDCRNG), so no random byte the VM
// reads afterwards is its template's or a sibling restore's.
func Reseed(seed []byte) error {
	if len(seed) < 32 {
		return fmt.Errorf("reseed: %d bytes of seed, want at least 32", len(seed))
	}
	f, err := os.OpenFile("/dev/urandom", os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("reseed: %w", err)
	}
	defer f.Close()
	// struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
	info := make([]byte, 8+len(seed))
	*(*int32)(unsafe.Pointer(&info[0])) = int32(len(seed) * 8)
	*(*int32)(unsafe.Pointer(&info[4])) = int32(len(seed))
	copy(info[8:], seed)
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), rndAddEntropy, uintptr(unsafe.Pointer(&info[0]))); e != 0 {
		return fmt.Errorf("reseed: RNDADDENTROPY: %w", e)
	}
	clear(info)
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), rndReseedCRNG, 0); e != 0 {
		return fmt.Errorf("reseed: RNDRESEEDCRNG: %w", e)
	}
	return nil
}

// SetClock sets the guest's wall clock to now (the template's stopped
// when it was saved).
func SetClock(now time.Time) error {
	if now.IsZero() {
		return errors.New("set clock: no time given")
	}
	ts := unix.NsecToTimespec(now.UnixNano())
	if err := unix.ClockSettime(unix.CLOCK_REALTIME, &ts); err != nil {
		return fmt.Errorf("set clock: %w", err)
	}
	return nil
}

// SetMAC sets iface's hardware address to mac (the template's is the
// template's: a restore's device state and the guest's memory both hold
// it), bringing the interface down for it when it is up.
func SetMAC(iface, mac string) error {
	hw, err := net.ParseMAC(mac)
	if err != nil {
		return fmt.Errorf("set MAC of %s: %w", iface, err)
	}
	link, err := netlink.LinkByName(iface)
	if err != nil {
		return fmt.Errorf("set MAC of %s: %w", iface, err)
	}
	up := link.Attrs().Flags&net.FlagUp != 0
	if up {
		if err := netlink.LinkSetDown(link); err != nil {
			return fmt.Errorf("set MAC of %s: down: %w", iface, err)
		}
	}
	if err := netlink.LinkSetHardwareAddr(link, hw); err != nil {
		return fmt.Errorf("set MAC of %s to %s: %w", iface, mac, err)
	}
	if up {
		if err := netlink.LinkSetUp(link); err != nil {
			return fmt.Errorf("set MAC of %s: up: %w", iface, err)
		}
	}
	return nil
}
