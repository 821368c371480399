package agent

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
)

// Firecracker has no virtio-serial: a template it runs is told on its
// kernel command line (agentproto.IdentityChannelParam) to take its
// identity on AF_VSOCK port agentproto.IdentityVsockPort instead, where
// the host connects through the vsock device's unix socket. The listener
// is the kernel's; what is read from a connection is ServeIdentity's,
// which the tests drive with unix sockets (this machine has no vsock).
// The AF_VSOCK listener itself is untested against a real kernel here.

// identityOverVsock reports whether the kernel command line in cmdline
// names the vsock identity channel.
func identityOverVsock(cmdline string) bool {
	for _, f := range strings.Fields(cmdline) {
		if k, v, ok := strings.Cut(f, "="); ok && k == agentproto.IdentityChannelParam && v == agentproto.IdentityChannelVsock {
			return true
		}
	}
	return false
}

// IdentityConn is one connection on the identity channel.
type IdentityConn interface {
	io.ReadWriteCloser
	SetDeadline(time.Time) error
}

// identityConnWait bounds one connection's delivery of its line: a host
// that connects and sends nothing does not hold the agent.
const identityConnWait = 10 * time.Second

// ServeIdentity accepts connections until one delivers a whole line (at
// most agentproto.MaxIdentity bytes), and returns it with the answer on
// that connection, which stays open for it (see IdentityAnswer; the
// connection's deadline, identityConnWait from its accept, bounds the
// answer too). A connection that ends, stalls or sends too much before
// its newline is closed and the next waited for: a vsock connection the
// restore reset is not the host's last word.
func ServeIdentity(ctx context.Context, accept func(context.Context) (IdentityConn, error)) ([]byte, IdentityAnswer, error) {
	for {
		c, err := accept(ctx)
		if err != nil {
			return nil, nil, fmt.Errorf("identity channel: %w", err)
		}
		line, err := readIdentity(c)
		if err == nil {
			return line, answerOn(c), nil
		}
		c.Close()
		clear(line)
	}
}

func readIdentity(c IdentityConn) ([]byte, error) {
	_ = c.SetDeadline(time.Now().Add(identityConnWait))
	r := bufio.NewReaderSize(io.LimitReader(c, agentproto.MaxIdentity+1), 64<<10)
	var line []byte
	for {
		chunk, err := r.ReadSlice('\n')
		line = append(line, chunk...)
		if err == nil {
			return bytes.TrimSuffix(line, []byte("\n")), nil
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return line, err
		}
		if len(line) > agentproto.MaxIdentity {
			return line, fmt.Errorf("identity longer than %d bytes", agentproto.MaxIdentity)
		}
	}
}

// vsockListener is a listening AF_VSOCK socket (Go's net package does not
// take the family), polled so a waiting agent's context can end it.
// listenVsock takes unix.VMADDR_PORT_ANY for a port the kernel picks
// (the tests': two runs on one host never collide), which port reads.
type vsockListener struct{ fd int }

func listenVsock(port uint32) (*vsockListener, error) {
	fd, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("vsock socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrVM{CID: unix.VMADDR_CID_ANY, Port: port}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("vsock bind port %d: %w", port, err)
	}
	if err := unix.Listen(fd, 4); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("vsock listen: %w", err)
	}
	return &vsockListener{fd: fd}, nil
}

// Accept waits for a connection until ctx ends.
func (l *vsockListener) Accept(ctx context.Context) (IdentityConn, error) {
	for {
		nfd, _, err := unix.Accept4(l.fd, unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK)
		if err == nil {
			return os.NewFile(uintptr(nfd), "vsock"), nil
		}
		if !errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.EINTR) {
			return nil, fmt.Errorf("vsock accept: %w", err)
		}
		if _, err := unix.Poll([]unix.PollFd{{Fd: int32(l.fd), Events: unix.POLLIN}}, 100); err != nil && !errors.Is(err, unix.EINTR) {
			return nil, fmt.Errorf("vsock poll: %w", err)
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("waiting for the identity: %w", ctx.Err())
		}
	}
}

func (l *vsockListener) Close() error { return unix.Close(l.fd) }

// port is the port the listener is bound to: the one asked for, or the
// kernel's pick for unix.VMADDR_PORT_ANY.
func (l *vsockListener) port() (uint32, error) {
	sa, err := unix.Getsockname(l.fd)
	if err != nil {
		return 0, fmt.Errorf("vsock getsockname: %w", err)
	}
	vm, ok := sa.(*unix.SockaddrVM)
	if !ok {
		return 0, fmt.Errorf("vsock getsockname: a %T", sa)
	}
	return vm.Port, nil
}

// awaitVsockIdentity listens on the identity port and serves it; the
// listener closes once a line is read (its connection stays open for
// the answer).
func awaitVsockIdentity(ctx context.Context) ([]byte, IdentityAnswer, error) {
	l, err := listenVsock(agentproto.IdentityVsockPort)
	if err != nil {
		return nil, nil, err
	}
	defer l.Close()
	return ServeIdentity(ctx, l.Accept)
}
