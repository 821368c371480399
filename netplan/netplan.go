// Package netplan owns the host side of the VMs' network: the bridge, one
// TAP per VM, the VMs' addresses and the orchestrator's nftables table.
// Everything it creates per VM it can find again and remove, so a crash
// never leaks devices or addresses.
package netplan

import (
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"

	"github.com/vishvananda/netlink"
)

// TAPPrefix starts the name of every TAP the orchestrator creates; the
// rest is the VM id. Linux allows 15 bytes.
const TAPPrefix = "fa"

// TAPName is the TAP device of a VM.
func TAPName(vmID string) (string, error) {
	name := TAPPrefix + vmID
	if len(name) > 15 {
		return "", fmt.Errorf("tap name %q is longer than 15 bytes", name)
	}
	return name, nil
}

// Bridge is the orchestrator's bridge and its addressing.
type Bridge struct {
	Name    string
	Prefix  netip.Prefix // the VMs' range
	Gateway netip.Addr   // the bridge's own address
	MTU     int
}

// Ensure creates the bridge if needed, pins its MAC, gives it the gateway
// address and brings it up. It is idempotent.
//
// The pinned MAC matters: a Linux bridge whose address was never set takes
// the lowest MAC among its ports, so adding or removing a VM's TAP would
// change the gateway's MAC under every running guest. A guest that learned
// the address of a TAP since deleted sends to nobody until its ARP entry
// expires: minutes of silence for an established job (seen in the crash
// recovery test as a runner's report hanging for two minutes).
func (b Bridge) Ensure() error {
	link, err := netlink.LinkByName(b.Name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if !errors.As(err, &nf) {
			return fmt.Errorf("bridge %s: look up: %w", b.Name, err)
		}
		attrs := netlink.NewLinkAttrs()
		attrs.Name = b.Name
		if b.MTU > 0 {
			attrs.MTU = b.MTU
		}
		if err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: attrs}); err != nil {
			return fmt.Errorf("bridge %s: create: %w", b.Name, err)
		}
		if link, err = netlink.LinkByName(b.Name); err != nil {
			return fmt.Errorf("bridge %s: look up after create: %w", b.Name, err)
		}
	}
	if _, ok := link.(*netlink.Bridge); !ok {
		return fmt.Errorf("bridge %s: exists but is a %s, not a bridge", b.Name, link.Type())
	}
	if mac := BridgeMAC(b.Name); link.Attrs().HardwareAddr.String() != mac.String() {
		if err := netlink.LinkSetHardwareAddr(link, mac); err != nil {
			return fmt.Errorf("bridge %s: set mac %s: %w", b.Name, mac, err)
		}
	}
	want := &netlink.Addr{IPNet: &net.IPNet{IP: b.Gateway.AsSlice(), Mask: net.CIDRMask(b.Prefix.Bits(), 32)}}
	addrs, err := netlink.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("bridge %s: list addresses: %w", b.Name, err)
	}
	has := false
	for _, a := range addrs {
		if a.IPNet.String() == want.IPNet.String() {
			has = true
		}
	}
	if !has {
		if err := netlink.AddrAdd(link, want); err != nil {
			return fmt.Errorf("bridge %s: add %s: %w", b.Name, want.IPNet, err)
		}
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("bridge %s: up: %w", b.Name, err)
	}
	return nil
}

// BridgeMAC is the MAC a bridge is pinned to: locally administered,
// unicast, and the same for the same name on every start, so guests
// adopted across a restart keep a valid gateway entry.
func BridgeMAC(name string) net.HardwareAddr {
	sum := sha256.Sum256([]byte("fireactions bridge " + name))
	mac := net.HardwareAddr(sum[:6])
	mac[0] = (mac[0] | 0x02) &^ 0x01
	return mac
}

// AddTAP creates a persistent TAP named name on the bridge, up, its
// bridge port locked (no learning, no unicast or multicast flooding).
func (b Bridge) AddTAP(name string) error {
	br, err := netlink.LinkByName(b.Name)
	if err != nil {
		return fmt.Errorf("tap %s: bridge %s: %w", name, b.Name, err)
	}
	attrs := netlink.NewLinkAttrs()
	attrs.Name = name
	attrs.MasterIndex = br.Attrs().Index
	if b.MTU > 0 {
		attrs.MTU = b.MTU
	}
	tap := &netlink.Tuntap{
		LinkAttrs: attrs,
		Mode:      netlink.TUNTAP_MODE_TAP,
		Flags:     netlink.TUNTAP_NO_PI | netlink.TUNTAP_VNET_HDR,
	}
	if err := netlink.LinkAdd(tap); err != nil {
		return fmt.Errorf("tap %s: create: %w", name, err)
	}
	// LinkAdd opened the queue to create it; a persistent TAP keeps no fd.
	for _, f := range tap.Fds {
		f.Close()
	}
	link, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("tap %s: look up: %w", name, err)
	}
	if err := netlink.LinkSetMaster(link, br); err != nil {
		_ = netlink.LinkDel(link)
		return fmt.Errorf("tap %s: join %s: %w", name, b.Name, err)
	}
	// Locked before it is up: the port never learns or floods, even
	// before Rules.AddVM pins the VM's MAC to it.
	if err := lockPort(link); err != nil {
		_ = netlink.LinkDel(link)
		return err
	}
	if err := netlink.LinkSetUp(link); err != nil {
		_ = netlink.LinkDel(link)
		return fmt.Errorf("tap %s: up: %w", name, err)
	}
	return nil
}

// DeleteTAP removes a TAP; one that is already gone is not an error.
func DeleteTAP(name string) error {
	link, err := netlink.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return fmt.Errorf("tap %s: look up: %w", name, err)
	}
	if err := netlink.LinkDel(link); err != nil {
		return fmt.Errorf("tap %s: delete: %w", name, err)
	}
	return nil
}

// TAPs lists this bridge's TAP devices: those on it, and retired ones
// (off every bridge, in DeadGroup) whatever bridge they were on. Another
// orchestrator's TAPs on another bridge are never listed.
func (b Bridge) TAPs() ([]string, error) {
	br, err := netlink.LinkByName(b.Name)
	if err != nil {
		return nil, fmt.Errorf("bridge %s: %w", b.Name, err)
	}
	links, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	var out []string
	for _, l := range links {
		a := l.Attrs()
		if _, ok := l.(*netlink.Tuntap); !ok || !strings.HasPrefix(a.Name, TAPPrefix) {
			continue
		}
		if a.MasterIndex == br.Attrs().Index || (a.MasterIndex == 0 && a.Group == DeadGroup) {
			out = append(out, a.Name)
		}
	}
	return out, nil
}

// NewMAC returns a random locally administered unicast MAC.
func NewMAC() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	b[0] = (b[0] | 0x02) &^ 0x01
	return net.HardwareAddr(b[:]).String()
}

// EnableForwarding turns on IPv4 forwarding in this network namespace,
// writing only when it is off (so a host that enables it needs no write).
func EnableForwarding() error {
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_forward"); err == nil && strings.TrimSpace(string(b)) == "1" {
		return nil
	}
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1\n"), 0o644); err != nil {
		return fmt.Errorf("enable ip forwarding: %w", err)
	}
	return nil
}
