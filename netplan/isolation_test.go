package netplan

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// These tests put a guest stand-in on each TAP: the test opens the TAP's
// queue (as QEMU or Firecracker would), writes the frames a hostile guest
// would send and reads what the bridge hands that guest. Each probe runs
// once with the protection off as a positive control, so a blind probe
// (frames never reaching the bridge, a probe that never sees anything)
// fails the test instead of passing it as "blocked".

// guest is a stand-in for a VM: its TAP's queue, its MAC and address.
type guest struct {
	vm VM
	hw net.HardwareAddr
	f  *os.File
}

// openTAP attaches to a persistent TAP as the VMM would, without a vnet
// header, so reads and writes are bare Ethernet frames.
func openTAP(t testing.TB, name string) *os.File {
	t.Helper()
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		t.Fatalf("open /dev/net/tun: %v", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		t.Fatal(err)
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		t.Fatalf("attach to tap %s: %v", name, err)
	}
	return os.NewFile(uintptr(fd), name)
}

// frames reads what arrives on g's TAP for d.
func (g *guest) frames(d time.Duration) [][]byte {
	var out [][]byte
	deadline := time.Now().Add(d)
	buf := make([]byte, 65536)
	for {
		_ = g.f.SetReadDeadline(deadline)
		n, err := g.f.Read(buf)
		if err != nil {
			return out
		}
		out = append(out, append([]byte(nil), buf[:n]...))
	}
}

func (g *guest) send(t testing.TB, frame []byte) {
	t.Helper()
	if _, err := g.f.Write(frame); err != nil {
		t.Errorf("guest %s: send: %v", g.vm.TAP, err)
	}
}

// arpFrame is an ARP packet (op 1 request, 2 reply) in an Ethernet frame.
func arpFrame(ethSrc, ethDst net.HardwareAddr, op uint16, sha net.HardwareAddr, spa netip.Addr, tha net.HardwareAddr, tpa netip.Addr) []byte {
	b := make([]byte, 0, 60)
	b = append(b, ethDst...)
	b = append(b, ethSrc...)
	b = append(b, 0x08, 0x06)
	b = binary.BigEndian.AppendUint16(b, 1)      // htype ethernet
	b = binary.BigEndian.AppendUint16(b, 0x0800) // ptype ipv4
	b = append(b, 6, 4)
	b = binary.BigEndian.AppendUint16(b, op)
	b = append(b, sha...)
	b = append(b, spa.AsSlice()...)
	b = append(b, tha...)
	b = append(b, tpa.AsSlice()...)
	for len(b) < 60 {
		b = append(b, 0)
	}
	return b
}

var broadcast = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// isARPReplyFromGateway: an ARP reply telling who the gateway is, to to.
func isARPReplyFromGateway(f []byte, gw netip.Addr, to net.HardwareAddr) bool {
	return len(f) >= 42 && bytes.Equal(f[0:6], to) && f[12] == 0x08 && f[13] == 0x06 &&
		binary.BigEndian.Uint16(f[20:22]) == 2 && bytes.Equal(f[28:32], gw.AsSlice())
}

// isARPRequestFor: an ARP request asking who has ip.
func isARPRequestFor(f []byte, ip netip.Addr) bool {
	return len(f) >= 42 && f[12] == 0x08 && f[13] == 0x06 &&
		binary.BigEndian.Uint16(f[20:22]) == 1 && bytes.Equal(f[38:42], ip.AsSlice())
}

// carries: an IPv4 frame whose bytes hold the probe's payload.
func carries(f []byte, payload []byte) bool {
	return len(f) > 14 && f[12] == 0x08 && f[13] == 0x00 && bytes.Contains(f, payload)
}

// lan is a bridge, its rules (applied or not) and guests on its TAPs.
type lan struct {
	b       Bridge
	r       Rules
	protect bool
	// rulesOnly: protected, but each port then unlocked (learning and
	// flooding back on), to see the nftables guard hold on its own.
	rulesOnly bool
}

// newLAN makes the bridge; with protect the rules are applied and each
// guest admitted as the pool does (AddTAP, then AddVM). Without it the
// TAPs are plain bridge ports as a bridge makes them (learning and
// flooding on), and no rules exist: the control.
func newLAN(t testing.TB, protect bool) *lan {
	b, r := testRules()
	r.NewConnPerSecond, r.KBytesPerSecond = 0, 0
	if err := b.Ensure(); err != nil {
		t.Fatal(err)
	}
	if protect {
		if err := r.Apply(context.Background()); err != nil {
			t.Fatalf("apply: %v", err)
		}
	}
	return &lan{b: b, r: r, protect: protect}
}

func (l *lan) guest(t testing.TB, tap, mac, ip string) *guest {
	t.Helper()
	g := &guest{vm: VM{TAP: tap, MAC: mac, IP: netip.MustParseAddr(ip)}}
	g.hw, _ = net.ParseMAC(mac)
	if err := l.b.AddTAP(tap); err != nil {
		t.Fatal(err)
	}
	if l.protect {
		if err := l.r.AddVM(g.vm); err != nil {
			t.Fatalf("add vm: %v", err)
		}
	}
	if !l.protect || l.rulesOnly {
		link, err := netlink.LinkByName(tap)
		if err != nil {
			t.Fatal(err)
		}
		for _, set := range []func(netlink.Link, bool) error{netlink.LinkSetLearning, netlink.LinkSetFlood} {
			if err := set(link, true); err != nil {
				t.Fatalf("unprotected port %s: %v", tap, err)
			}
		}
	}
	g.f = openTAP(t, tap)
	t.Cleanup(func() { g.f.Close() })
	return g
}

// settle gives the ports time to reach forwarding once their queues are
// attached (carrier up) and drains what arrived meanwhile.
func settle(gs ...*guest) {
	time.Sleep(150 * time.Millisecond)
	for _, g := range gs {
		g.frames(10 * time.Millisecond)
	}
}

// fdbPort is the name of the bridge port the bridge forwards mac to, ""
// when it has no entry.
func fdbPort(t testing.TB, bridge string, mac net.HardwareAddr) string {
	t.Helper()
	br, err := netlink.LinkByName(bridge)
	if err != nil {
		t.Fatal(err)
	}
	ns, err := netlink.NeighList(0, unix.AF_BRIDGE)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range ns {
		if n.MasterIndex == br.Attrs().Index && bytes.Equal(n.HardwareAddr, mac) {
			if l, err := netlink.LinkByIndex(n.LinkIndex); err == nil {
				return l.Attrs().Name
			}
		}
	}
	return ""
}

// hostSendUDP sends payload from the host to ip, with the host's
// neighbour entry for ip pinned to mac when mac is set (as after the host
// has resolved it once).
func hostSendUDP(t testing.TB, bridge string, ip netip.Addr, mac net.HardwareAddr, payload []byte) {
	t.Helper()
	if mac != nil {
		br, err := netlink.LinkByName(bridge)
		if err != nil {
			t.Fatal(err)
		}
		if err := netlink.NeighSet(&netlink.Neigh{LinkIndex: br.Attrs().Index, Family: unix.AF_INET, State: netlink.NUD_PERMANENT,
			IP: ip.AsSlice(), HardwareAddr: mac}); err != nil {
			t.Fatalf("host neighbour %s: %v", ip, err)
		}
	}
	c, err := net.Dial("udp4", netip.AddrPortFrom(ip, 9).String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := 0; i < 3; i++ {
		_, err = c.Write(payload)
		if err != nil && !errors.Is(err, unix.ECONNREFUSED) {
			t.Fatalf("host send to %s: %v", ip, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// arpSpoofProbe: the victim talks to the gateway, then the attacker sends
// an ARP request whose sender fields are its own (what the old rule
// checked) but whose Ethernet source is the victim's MAC. It reports the
// port the bridge then holds the victim's MAC on, and whether the host's
// traffic for the victim reached the attacker and the victim.
func arpSpoofProbe(t *testing.T, protect, rulesOnly bool) (victimPort string, attackerGot, victimGot, gatewayAnswers bool) {
	l := newLAN(t, protect)
	l.rulesOnly = rulesOnly
	att := l.guest(t, "faattacker", "02:aa:00:00:00:01", "10.77.0.10")
	vic := l.guest(t, "favictim", "02:bb:00:00:00:02", "10.77.0.20")
	settle(att, vic)
	gw := l.b.Gateway

	// The victim asks for the gateway, legitimately: the bridge passes it
	// and the host answers.
	vic.send(t, arpFrame(vic.hw, broadcast, 1, vic.hw, vic.vm.IP, make(net.HardwareAddr, 6), gw))
	for _, f := range vic.frames(300 * time.Millisecond) {
		if isARPReplyFromGateway(f, gw, vic.hw) {
			gatewayAnswers = true
		}
	}
	// The spoof: Ethernet source the victim's, ARP sender the attacker's.
	for i := 0; i < 3; i++ {
		att.send(t, arpFrame(vic.hw, broadcast, 1, att.hw, att.vm.IP, make(net.HardwareAddr, 6), gw))
	}
	time.Sleep(50 * time.Millisecond)
	victimPort = fdbPort(t, l.b.Name, vic.hw)

	payload := []byte("for-the-victim-only-0123456789")
	hostSendUDP(t, l.b.Name, vic.vm.IP, vic.hw, payload)
	for _, f := range att.frames(300 * time.Millisecond) {
		attackerGot = attackerGot || carries(f, payload)
	}
	for _, f := range vic.frames(100 * time.Millisecond) {
		victimGot = victimGot || carries(f, payload)
	}
	return
}

// TestARPSpoofWithAnotherVMsEthernetSource: a VM sending ARP from another
// VM's Ethernet address must not take that VM's traffic.
func TestARPSpoofWithAnotherVMsEthernetSource(t *testing.T) {
	inNewNetns(t, func() {
		// Control: on an unprotected bridge the same spoof moves the
		// victim's MAC to the attacker's port and the attacker receives
		// the host's traffic for the victim. If it does not, the probe
		// cannot see the attack and proves nothing.
		port, attackerGot, _, answers := arpSpoofProbe(t, false, false)
		if port != "faattacker" || !attackerGot || !answers {
			t.Errorf("control (no protection): victim's mac on %q, attacker got the victim's traffic %v, gateway answered %v; "+
				"want faattacker, true, true: the probe is blind", port, attackerGot, answers)
			return
		}
	})
	for _, rulesOnly := range []bool{false, true} {
		inNewNetns(t, func() {
			// rulesOnly: the guard alone, ports learning as a plain bridge's.
			port, attackerGot, victimGot, answers := arpSpoofProbe(t, true, rulesOnly)
			if !answers {
				t.Errorf("rules only %v: the victim's legitimate ARP request for the gateway got no answer", rulesOnly)
			}
			if port != "favictim" {
				t.Errorf("rules only %v: after the spoof the bridge forwards the victim's mac to %q, want favictim", rulesOnly, port)
			}
			if attackerGot {
				t.Errorf("rules only %v: the attacker received the host's traffic for the victim", rulesOnly)
			}
			if !victimGot {
				t.Errorf("rules only %v: the victim did not receive the host's traffic for it", rulesOnly)
			}
		})
	}
	inNewNetns(t, func() {
		// The attacker's own, honest ARP still passes: the rule blocks
		// the spoof, not the attacker's port.
		l := newLAN(t, true)
		att := l.guest(t, "faattacker", "02:aa:00:00:00:01", "10.77.0.10")
		settle(att)
		att.send(t, arpFrame(att.hw, broadcast, 1, att.hw, att.vm.IP, make(net.HardwareAddr, 6), l.b.Gateway))
		got := false
		for _, f := range att.frames(300 * time.Millisecond) {
			got = got || isARPReplyFromGateway(f, l.b.Gateway, att.hw)
		}
		if !got {
			t.Error("an honest ARP request for the gateway got no answer")
		}
		// An ARP whose Ethernet source is the attacker's but whose sender
		// MAC is not stays blocked too (the old rule's case).
		other, _ := net.ParseMAC("02:cc:00:00:00:03")
		att.send(t, arpFrame(att.hw, broadcast, 1, other, att.vm.IP, make(net.HardwareAddr, 6), l.b.Gateway))
		for _, f := range att.frames(300 * time.Millisecond) {
			if len(f) >= 42 && f[12] == 0x08 && f[13] == 0x06 && bytes.Equal(f[32:38], other) {
				t.Error("the gateway answered an ARP whose sender MAC is not the VM's")
			}
		}
	})
}

// floodProbe: three VMs; the host talks to the third, which then goes
// away as the pool removes a VM; the host's late traffic for it (its
// neighbour entry outlives the VM) must reach no other VM.
func floodProbe(t *testing.T, protect bool) (goneGotWhileThere, neighbourGotLate, bystanderGotLate, arpReachesVM bool) {
	l := newLAN(t, protect)
	a := l.guest(t, "faneighbour", "02:aa:00:00:00:01", "10.77.0.10")
	b := l.guest(t, "fabystander", "02:bb:00:00:00:02", "10.77.0.20")
	gone := l.guest(t, "fagone", "02:dd:00:00:00:04", "10.77.0.40")
	settle(a, b, gone)

	// The host resolves a VM by broadcast ARP: that must still reach it.
	hostSendUDP(t, l.b.Name, b.vm.IP, nil, []byte("resolve"))
	for _, f := range b.frames(300 * time.Millisecond) {
		arpReachesVM = arpReachesVM || isARPRequestFor(f, b.vm.IP)
	}

	first := []byte("while-the-vm-is-there-0123456789")
	hostSendUDP(t, l.b.Name, gone.vm.IP, gone.hw, first)
	for _, f := range gone.frames(300 * time.Millisecond) {
		goneGotWhileThere = goneGotWhileThere || carries(f, first)
	}
	a.frames(50 * time.Millisecond)
	b.frames(50 * time.Millisecond)

	// Teardown as the pool does it: rules out, TAP retired.
	gone.f.Close()
	if protect {
		if err := l.r.RemoveVM(gone.vm); err != nil {
			t.Fatalf("remove vm: %v", err)
		}
	}
	if err := Retire(gone.vm.TAP); err != nil {
		t.Fatal(err)
	}
	if port := fdbPort(t, l.b.Name, gone.hw); port != "" {
		t.Errorf("the bridge still forwards the gone VM's mac to %s", port)
	}
	late := []byte("late-traffic-for-a-gone-vm-987654")
	hostSendUDP(t, l.b.Name, gone.vm.IP, gone.hw, late)
	for _, f := range a.frames(300 * time.Millisecond) {
		neighbourGotLate = neighbourGotLate || carries(f, late)
	}
	for _, f := range b.frames(100 * time.Millisecond) {
		bystanderGotLate = bystanderGotLate || carries(f, late)
	}
	return
}

// TestUnknownUnicastIsNotFloodedToVMs: frames for a MAC the bridge has
// no port for (a VM that is gone) reach no VM.
func TestUnknownUnicastIsNotFloodedToVMs(t *testing.T) {
	inNewNetns(t, func() {
		// Control: a plain bridge floods the late traffic to the others.
		there, neighbour, bystander, arp := floodProbe(t, false)
		if !there || !neighbour || !bystander || !arp {
			t.Errorf("control (no protection): vm got its traffic %v, neighbours got the late traffic %v/%v, host ARP reached a vm %v; "+
				"want all true: the probe is blind", there, neighbour, bystander, arp)
		}
	})
	inNewNetns(t, func() {
		there, neighbour, bystander, arp := floodProbe(t, true)
		if !there {
			t.Error("the VM did not receive the host's traffic for it while it was there")
		}
		if !arp {
			t.Error("the host's broadcast ARP request did not reach the VM")
		}
		if neighbour || bystander {
			t.Errorf("late traffic for a gone VM reached its neighbours (%v, %v)", neighbour, bystander)
		}
	})
}

// TestVMPortsLockedAndStaticFDB: once admitted, a VM's port learns
// nothing and floods nothing, and the bridge has a static entry for the
// VM's MAC on it; RemoveVM takes the entry away.
func TestVMPortsLockedAndStaticFDB(t *testing.T) {
	inNewNetns(t, func() {
		l := newLAN(t, true)
		g := l.guest(t, "fa0123456789ab", "02:11:22:33:44:55", "10.77.3.4")
		link, err := netlink.LinkByName(g.vm.TAP)
		if err != nil {
			t.Fatal(err)
		}
		pi, err := netlink.LinkGetProtinfo(link)
		if err != nil {
			t.Fatal(err)
		}
		if pi.Learning || pi.Flood || pi.ProxyArp {
			t.Errorf("vm port: learning %v, unicast flood %v; want both off", pi.Learning, pi.Flood)
		}
		if port := fdbPort(t, l.b.Name, g.hw); port != g.vm.TAP {
			t.Errorf("fdb entry for the vm's mac on %q, want %s", port, g.vm.TAP)
		}
		static := false
		ns, _ := netlink.NeighList(link.Attrs().Index, unix.AF_BRIDGE)
		for _, n := range ns {
			if bytes.Equal(n.HardwareAddr, g.hw) && n.State&netlink.NUD_NOARP != 0 {
				static = true
			}
		}
		if !static {
			t.Errorf("fdb entry for %s is not static: %+v", g.hw, ns)
		}
		if err := l.r.RemoveVM(g.vm); err != nil {
			t.Fatal(err)
		}
		if port := fdbPort(t, l.b.Name, g.hw); port != "" {
			t.Errorf("fdb entry for the vm's mac left on %s after RemoveVM", port)
		}
		if err := l.r.RemoveVM(g.vm); err != nil {
			t.Errorf("removing a removed vm: %v", err)
		}
	})
}
