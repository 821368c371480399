//go:build e2e

package e2e

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"testing"
	"time"
)

// frameCapture records the headers of every frame a network device in a
// test namespace receives or sends, as tcpdump would: a packet socket
// sees a guest's frames on its TAP before the bridge and nftables judge
// them, so it shows what left the guest even when it is dropped after.
type frameCapture struct {
	mu     sync.Mutex
	frames [][]byte // the first 64 bytes of each frame
	fd     int
	done   chan struct{}
}

const maxCapturedFrames = 200000

// captureFrames captures on the device dev of ns until the test ends.
func captureFrames(t *testing.T, ns *testNetns, dev string) *frameCapture {
	t.Helper()
	c := &frameCapture{fd: -1, done: make(chan struct{})}
	proto := int(htons(syscall.ETH_P_ALL))
	inNetns(t, ns, func() error {
		ifi, err := net.InterfaceByName(dev)
		if err != nil {
			return err
		}
		fd, err := syscall.Socket(syscall.AF_PACKET, syscall.SOCK_RAW, proto)
		if err != nil {
			return err
		}
		if err := syscall.Bind(fd, &syscall.SockaddrLinklayer{Protocol: htons(syscall.ETH_P_ALL), Ifindex: ifi.Index}); err != nil {
			syscall.Close(fd)
			return err
		}
		tv := syscall.NsecToTimeval(int64(200 * time.Millisecond))
		if err := syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv); err != nil {
			syscall.Close(fd)
			return err
		}
		c.fd = fd
		return nil
	})
	stop := make(chan struct{})
	go func() {
		defer close(c.done)
		buf := make([]byte, 65536)
		for {
			select {
			case <-stop:
				return
			default:
			}
			n, _, err := syscall.Recvfrom(c.fd, buf, 0)
			if err != nil || n < 14 {
				continue
			}
			c.mu.Lock()
			if len(c.frames) < maxCapturedFrames {
				c.frames = append(c.frames, append([]byte(nil), buf[:min(n, 64)]...))
			}
			c.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		close(stop)
		<-c.done
		syscall.Close(c.fd)
	})
	return c
}

// count is how many captured frames match.
func (c *frameCapture) count(match func(f []byte) bool) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, f := range c.frames {
		if match(f) {
			n++
		}
	}
	return n
}

// fromMAC matches frames whose Ethernet source is mac.
func fromMAC(mac net.HardwareAddr) func([]byte) bool {
	return func(f []byte) bool { return bytes.Equal(f[6:12], mac) }
}

// fromIPv4 matches IPv4 packets from ip and ARP frames whose sender is ip.
func fromIPv4(ip netip.Addr) func([]byte) bool {
	a := ip.As4()
	return func(f []byte) bool {
		switch binary.BigEndian.Uint16(f[12:14]) {
		case syscall.ETH_P_IP:
			return len(f) >= 30 && bytes.Equal(f[26:30], a[:])
		case syscall.ETH_P_ARP:
			return len(f) >= 32 && bytes.Equal(f[28:32], a[:])
		}
		return false
	}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
