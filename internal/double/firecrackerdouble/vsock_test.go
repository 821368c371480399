package firecrackerdouble

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// connect makes a host-initiated connection on the vsock socket at path
// with line as its first line, and returns the answer's first line ("" when
// the double closed the connection; a connection left open unanswered
// fails the test, as Firecracker closes it).
func connect(t *testing.T, path, line string) (string, net.Conn) {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, line)
	got, err := bufio.NewReader(c).ReadString('\n')
	if ne := net.Error(nil); got == "" && errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("%q: the connection was neither answered nor closed within 5 s", line)
	}
	return got, c
}

// TestTheVsockDeviceAsFirecrackerDocumentsIt: PUT /vsock binds uds_path
// (refused when the path exists); a host connection gets "OK <port>" and
// the guest's stream only with a CONNECT line to a port a guest listens
// on while the microVM runs (not before InstanceStart, not paused, not a
// port nobody listens on, not another first line); a snapshot load binds
// the socket again at the path it was given.
func TestTheVsockDeviceAsFirecrackerDocumentsIt(t *testing.T) {
	dir := t.TempDir()
	guest := filepath.Join(dir, "guest")
	gl, err := net.Listen("unix", guest+"_1024")
	if err != nil {
		t.Fatal(err)
	}
	defer gl.Close()
	go func() {
		for {
			c, err := gl.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }() // an echoing guest
		}
	}()
	f := newFixture(t)
	f.srv.opt.GuestVsock = guestVsock(guest)
	taken := filepath.Join(dir, "taken.sock")
	os.WriteFile(taken, nil, 0o600)
	if code, fault := f.do("PUT", "/vsock", `{"guest_cid":3,"uds_path":"`+taken+`"}`); code != 400 || !strings.Contains(fault, "Cannot create backend for vsock device") {
		t.Fatalf("PUT /vsock on a path that exists: %d %q", code, fault)
	}
	sock := filepath.Join(dir, "v.sock")
	f.configure()
	f.mustAccept("PUT", "/vsock", `{"guest_cid":3,"uds_path":"`+sock+`"}`)
	if got, _ := connect(t, sock, "CONNECT 1024\n"); got != "" {
		t.Fatalf("before InstanceStart: %q", got)
	}
	f.mustAccept("PUT", "/actions", instanceStart)
	for _, bad := range []string{"CONNECT 1025\n", "HELLO 1024\n", "CONNECT x\n", "CONNECT 99999999999\n"} {
		if got, _ := connect(t, sock, bad); got != "" {
			t.Errorf("%q: answered %q", bad, got)
		}
	}
	got, c := connect(t, sock, "CONNECT 1024\n")
	if !strings.HasPrefix(got, "OK ") {
		t.Fatalf("CONNECT to a listening guest: %q", got)
	}
	io.WriteString(c, "ping\n")
	if echo, _ := bufio.NewReader(c).ReadString('\n'); echo != "ping\n" {
		t.Fatalf("the guest's stream: %q", echo)
	}
	f.mustAccept("PATCH", "/vm", `{"state":"Paused"}`)
	if got, _ := connect(t, sock, "CONNECT 1024\n"); got != "" {
		t.Fatalf("paused: %q", got)
	}
	snap, mem := filepath.Join(dir, "s"), filepath.Join(dir, "m")
	f.mustAccept("PUT", "/snapshot/create", `{"snapshot_path":"`+snap+`","mem_file_path":"`+mem+`"}`)
	f.srv.vsockLn.Close()
	os.Remove(sock)

	g := newFixture(t)
	g.srv.opt.GuestVsock = guestVsock(guest)
	g.mustAccept("PUT", "/snapshot/load", `{"snapshot_path":"`+snap+`","mem_backend":{"backend_type":"File","backend_path":"`+mem+`"},"network_overrides":[{"iface_id":"eth0","host_dev_name":"fatap0"}]}`)
	g.mustAccept("PATCH", "/vm", `{"state":"Resumed"}`)
	if got, _ := connect(t, sock, "CONNECT 1024\n"); !strings.HasPrefix(got, "OK ") {
		t.Fatalf("after a load: %q", got)
	}
	h := newFixture(t)
	if code, fault := h.do("PUT", "/snapshot/load", `{"snapshot_path":"`+snap+`","mem_backend":{"backend_type":"File","backend_path":"`+mem+`"},"network_overrides":[{"iface_id":"eth9","host_dev_name":"fatap0"}]}`); code != 400 || !strings.Contains(fault, "no such interface") {
		t.Fatalf("a network override for an interface the snapshot lacks: %d %q", code, fault)
	}
}
