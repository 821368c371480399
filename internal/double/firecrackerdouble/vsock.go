package firecrackerdouble

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
)

// The vsock device's host end, as Firecracker's docs/vsock.md describes
// it: PUT /vsock (pre-boot) binds and listens on uds_path at once (a path
// that exists is refused: Firecracker binds, it does not replace), and a
// snapshot keeps the device (uds_path as given), so a load binds it
// again. A host-initiated connection sends "CONNECT <port>\n"; when a
// guest listens on that port the answer is "OK <host port>\n" and the
// connection is the guest's stream, else Firecracker closes it. A line
// that is not a CONNECT, or a guest not running (paused, or never
// started), closes it too.
//
// The double has no guest that listens on vsock (QEMU boots without the
// device; a load restores no guest): Options.GuestVsock stands in for
// the guest's listening ports (FCDOUBLE_VSOCK_GUEST=<path>: the guest's
// port p is the unix socket <path>_<p>, as a test that plays the agent
// makes it).

// VsockConfig is a configured vsock device.
type VsockConfig struct {
	CID     int
	UDSPath string // as the VMM was given it
}

// maxConnectLine bounds the forwarding request Firecracker reads.
const maxConnectLine = 64

// putVsock configures the device and binds its socket.
func (s *Server) putVsock(body []byte) error {
	var v struct {
		GuestCID int    `json:"guest_cid"`
		UDSPath  string `json:"uds_path"`
	}
	if err := json.Unmarshal(body, &v); err != nil {
		return err
	}
	if s.vsockLn != nil {
		return fmt.Errorf("firecrackerdouble: updating a configured vsock device is not modelled")
	}
	cfg := &VsockConfig{CID: v.GuestCID, UDSPath: v.UDSPath}
	if err := s.listenVsock(cfg); err != nil {
		return err
	}
	s.vm.Vsock = cfg
	return nil
}

// listenVsock binds the device's socket and serves host connections.
func (s *Server) listenVsock(cfg *VsockConfig) error {
	ln, err := net.Listen("unix", s.hostPath(cfg.UDSPath))
	if err != nil {
		return fmt.Errorf("Cannot create backend for vsock device: %w", err)
	}
	s.vsockLn = ln
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go s.vsockConn(c)
		}
	}()
	return nil
}

// firstHostPort is where the double numbers host-initiated connections
// (the port "OK" names): Firecracker's local ports start at 2^30.
const firstHostPort = 1 << 30

// vsockConn forwards one host-initiated connection, or closes it.
func (s *Server) vsockConn(c net.Conn) {
	defer c.Close()
	line, err := bufio.NewReader(io.LimitReader(c, maxConnectLine)).ReadString('\n')
	if err != nil {
		return
	}
	arg, ok := strings.CutPrefix(strings.TrimSuffix(line, "\n"), "CONNECT ")
	port, perr := strconv.ParseUint(arg, 10, 32)
	if !ok || perr != nil {
		return
	}
	s.mu.Lock()
	running := s.isStarted && !s.paused
	s.mu.Unlock()
	if !running || s.opt.GuestVsock == nil {
		return
	}
	g, err := s.opt.GuestVsock(uint32(port))
	if err != nil {
		return // no guest listens on port
	}
	defer g.Close()
	if _, err := fmt.Fprintf(c, "OK %d\n", firstHostPort+s.vsockConns.Add(1)); err != nil {
		return
	}
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(g, c); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, g); done <- struct{}{} }()
	<-done
}

// guestVsock is FCDOUBLE_VSOCK_GUEST's stand-in for the guest's ports.
func guestVsock(base string) func(port uint32) (net.Conn, error) {
	if base == "" {
		return nil
	}
	return func(port uint32) (net.Conn, error) {
		return net.Dial("unix", fmt.Sprintf("%s_%d", base, port))
	}
}
