package agent

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
)

func TestTheCommandLineNamesTheVsockChannel(t *testing.T) {
	for cmdline, want := range map[string]bool{
		"console=ttyS0 fireactions.identity=vsock quiet": true,
		"console=ttyS0 quiet":                            false,
		"fireactions.identity=serial":                    false,
		"xfireactions.identity=vsock":                    false,
	} {
		if got := identityOverVsock(cmdline); got != want {
			t.Errorf("%q: %v, want %v", cmdline, got, want)
		}
	}
}

// unixAccept is ServeIdentity's accept over a unix listener: this machine
// has no vsock, so the tests stand a unix socket in for the AF_VSOCK one.
func unixAccept(t *testing.T) (accept func(context.Context) (IdentityConn, error), path string) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "identity.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return func(ctx context.Context) (IdentityConn, error) {
		stop := context.AfterFunc(ctx, func() { ln.Close() })
		defer stop()
		c, err := ln.Accept()
		if err != nil {
			return nil, err
		}
		return c.(*net.UnixConn), nil
	}, path
}

// served is one ServeIdentity's result.
type served struct {
	line   []byte
	answer IdentityAnswer
	err    error
}

// serveIdentity runs ServeIdentity on a unix socket until ctx ends, and
// returns the channel of its result and the socket's path.
func serveIdentity(ctx context.Context, t *testing.T) (<-chan served, string) {
	accept, path := unixAccept(t)
	done := make(chan served, 1)
	go func() {
		line, answer, err := ServeIdentity(ctx, accept)
		done <- served{line, answer, err}
	}()
	return done, path
}

// dialIdentity is the host's connection to the identity channel at path,
// closed when the test ends.
func dialIdentity(t *testing.T, path string) net.Conn {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestServeIdentityTakesTheFirstWholeLine: a connection that ends before
// its newline (a vsock connection the restore reset) is not the identity;
// the next connection's line is, and the agent's answer, an
// acknowledgement here, goes back on it.
func TestServeIdentityTakesTheFirstWholeLine(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done, path := serveIdentity(ctx, t)
	half := dialIdentity(t, path)
	half.Write([]byte(`{"config":`))
	half.(*net.UnixConn).CloseWrite() // ends its stream, still reads
	half.SetReadDeadline(time.Now().Add(5 * time.Second))
	ack, err := bufio.NewReader(half).ReadString('\n')
	if ack != "" {
		t.Fatalf("a line without its newline was acknowledged: %q", ack)
	}
	if timedOut(err) {
		t.Fatal("the connection that ended before its newline was left open")
	}
	half.Close()
	c := dialIdentity(t, path)
	c.Write([]byte(`{"mac":"02:00:00:00:00:09"}` + "\n"))
	r := <-done
	if r.err != nil || string(r.line) != `{"mac":"02:00:00:00:00:09"}` {
		t.Fatalf("ServeIdentity = %q, %v", r.line, r.err)
	}
	if err := r.answer(true); err != nil {
		t.Fatal(err)
	}
	ack, _ = bufio.NewReader(c).ReadString('\n')
	if strings.TrimSpace(ack) != agentproto.IdentityAck {
		t.Fatalf("ack %q", ack)
	}
}

// TestTheIdentityChannelCarriesTheAgentsAnswerNotAnAckOnReading: the
// line read, ServeIdentity returns with its connection open and nothing
// said on it; the host reads what the agent then answers: a refusal of
// an identity it could not apply, which the host takes for a failed
// restore, and the end of the connection.
func TestTheIdentityChannelCarriesTheAgentsAnswerNotAnAckOnReading(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done, path := serveIdentity(ctx, t)
	c := dialIdentity(t, path)
	c.Write([]byte(`{"mac":"bad"}` + "\n"))
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	if err := r.answer(false); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	rest, err := io.ReadAll(c)
	if string(rest) != agentproto.IdentityRefused+"\n" || err != nil {
		t.Fatalf("the host read %q, %v; want the refusal, then the end", rest, err)
	}
}

// TestServeIdentityRefusesAnOverlongLine: more than agentproto.MaxIdentity
// bytes without a newline is no identity (the connection is dropped, no
// acknowledgement), and a waiting agent's context ends the wait.
func TestServeIdentityRefusesAnOverlongLine(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done, path := serveIdentity(ctx, t)
	c := dialIdentity(t, path)
	go c.Write([]byte(strings.Repeat("x", agentproto.MaxIdentity+10) + "\n"))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	ack, err := bufio.NewReader(c).ReadString('\n')
	if ack != "" {
		t.Fatalf("an overlong line was acknowledged: %q", ack)
	}
	if timedOut(err) {
		t.Fatal("the connection of an overlong line was not dropped")
	}
	cancel()
	select {
	case r := <-done:
		if r.err == nil {
			t.Fatal("ServeIdentity returned no error when its context ended")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ServeIdentity did not end with its context")
	}
}

// TestTheVsockListenerEndsWithItsContext: where the kernel has AF_VSOCK
// (this machine: socket, bind and listen work; no transport connects to
// it, so no connection's path is tested), a waiting Accept ends with its
// context and a second listener on the port is refused while the first
// holds it. The first binds a port the kernel picks (two runs of the
// package on one host never share one), the second the port it read.
func TestTheVsockListenerEndsWithItsContext(t *testing.T) {
	l, err := listenVsock(unix.VMADDR_PORT_ANY)
	if errors.Is(err, unix.EAFNOSUPPORT) {
		t.Skip("no AF_VSOCK in this kernel: the listener is untested here")
	}
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port, err := l.port()
	if err != nil || port == unix.VMADDR_PORT_ANY {
		t.Fatalf("the bound port: %d, %v", port, err)
	}
	if l2, err := listenVsock(port); err == nil {
		l2.Close()
		t.Fatalf("a second listener bound port %d", port)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	t0 := time.Now()
	if c, err := l.Accept(ctx); err == nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Accept = %v, %v; want the context's end", c, err)
	}
	if took := time.Since(t0); took > 3*time.Second {
		t.Fatalf("Accept took %s to see its context end", took)
	}
}

// timedOut: err is a read's deadline, not the other end closing.
func timedOut(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
