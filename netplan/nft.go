package netplan

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"slices"
	"strings"

	"github.com/google/nftables"
)

// Rules is the orchestrator's own nftables tables for one bridge: an ip
// table (host input, routed forwarding, NAT) and a bridge table (switched
// VM-to-VM traffic and anti-spoofing). Both are replaced as a whole in one
// nft transaction at start, so no half-applied rule set is ever live; per
// VM only set elements change (AddVM, RemoveVM), over netlink.
type Rules struct {
	Bridge  string
	Prefix  netip.Prefix
	Gateway netip.Addr
	NAT     bool
	// HostTCP and HostUDP are the gateway ports guests may reach (the
	// agent's report port, DNS, caches); everything else on the host is
	// closed to them.
	HostTCP, HostUDP []int
	// BlockPrivate drops egress to RFC 1918 and shared (100.64/10)
	// ranges; link-local (169.254/16, cloud metadata) is always dropped.
	BlockPrivate bool
	// NewConnPerSecond limits each VM's new outgoing connections (0: off).
	NewConnPerSecond int
	// KBytesPerSecond limits each VM's traffic into the bridge (0: off).
	KBytesPerSecond int
}

// Table is the name of both tables, unique per bridge.
func (r Rules) Table() string {
	return "fireactions_" + strings.NewReplacer("-", "_", ".", "_").Replace(r.Bridge)
}

// privateRanges are dropped for egress when BlockPrivate is set.
var privateRanges = []string{"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10"}

// PrivateRanges are the IPv4 ranges BlockPrivate drops for egress (the
// guests' web proxy refuses the same: nix/lib/squid.nix).
func PrivateRanges() []string { return slices.Clone(privateRanges) }

func ports(p []int) string {
	s := make([]string, len(p))
	for i, v := range p {
		s[i] = fmt.Sprint(v)
	}
	return strings.Join(s, ", ")
}

// Script is the nft program that replaces both tables.
func (r Rules) Script() string {
	var b strings.Builder
	t, br, gw := r.Table(), fmt.Sprintf("%q", r.Bridge), r.Gateway
	w := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
	// Creating then deleting makes the delete safe when a table is absent.
	for _, fam := range []string{"ip", "bridge"} {
		w("table %s %s {}", fam, t)
		w("delete table %s %s", fam, t)
	}

	w("table ip %s {", t)
	if r.NewConnPerSecond > 0 {
		w("  set newconn { type ipv4_addr; flags dynamic; timeout 1m; }")
	}
	w("  chain input {")
	w("    type filter hook input priority filter; policy accept;")
	w("    iifname %s ct state established,related accept", br)
	if len(r.HostTCP) > 0 {
		w("    iifname %s ip daddr %s tcp dport { %s } accept", br, gw, ports(r.HostTCP))
	}
	if len(r.HostUDP) > 0 {
		w("    iifname %s ip daddr %s udp dport { %s } accept", br, gw, ports(r.HostUDP))
	}
	w("    iifname %s drop", br)
	w("  }")
	w("  chain forward {")
	w("    type filter hook forward priority filter; policy accept;")
	// Nothing is routed into the VMs but replies: not from other bridges'
	// VMs, not from the host's other networks.
	w("    oifname %s ct state established,related accept", br)
	w("    oifname %s drop", br)
	w("    iifname %s ip saddr != %s drop", br, r.Prefix)
	w("    iifname %s ip daddr 169.254.0.0/16 drop", br)
	if r.BlockPrivate {
		w("    iifname %s ip daddr { %s } drop", br, strings.Join(privateRanges, ", "))
	}
	if r.NewConnPerSecond > 0 {
		w("    iifname %s ct state new update @newconn { ip saddr limit rate over %d/second burst %d packets } drop",
			br, r.NewConnPerSecond, 2*r.NewConnPerSecond)
	}
	w("  }")
	if r.NAT {
		w("  chain postrouting {")
		w("    type nat hook postrouting priority srcnat; policy accept;")
		w("    ip saddr %s oifname != %s masquerade", r.Prefix, br)
		w("  }")
	}
	w("}")

	w("table bridge %s {", t)
	w("  set taps { type ifname; }")
	w("  set allowed { type ifname . ether_addr . ipv4_addr; }")
	if r.KBytesPerSecond > 0 {
		w("  set bandwidth { type ifname; flags dynamic; timeout 1m; }")
	}
	// A VM's frames never reach another VM's port: only the host.
	w("  chain forward {")
	w("    type filter hook forward priority filter; policy accept;")
	w("    iifname @taps drop")
	w("  }")
	w("  chain prerouting {")
	w("    type filter hook prerouting priority filter; policy accept;")
	w("    iifname @taps jump guard")
	w("  }")
	// A VM sends only from its own MAC and IP, IPv4 and ARP only. The
	// Ethernet source is checked for ARP too, not only the ARP sender
	// fields: the bridge learns from (and the host answers to) the frame's
	// source, so an ARP from another VM's MAC would take that VM's traffic.
	// Both lookups hit the TAP's one element only when the Ethernet source
	// and the ARP sender are both the VM's MAC, with its IP.
	w("  chain guard {")
	if r.KBytesPerSecond > 0 {
		w("    update @bandwidth { iifname limit rate over %d kbytes/second } drop", r.KBytesPerSecond)
	}
	w("    ether type ip iifname . ether saddr . ip saddr @allowed return")
	w("    ether type arp arp htype 1 arp ptype ip arp hlen 6 arp plen 4 " +
		"iifname . ether saddr . arp saddr ip @allowed " +
		"iifname . arp saddr ether . arp saddr ip @allowed return")
	w("    drop")
	w("  }")
	w("}")
	return b.String()
}

// Apply replaces both tables.
func (r Rules) Apply(ctx context.Context) error {
	return nft(ctx, r.Script())
}

// Remove deletes both tables; absent tables are not an error.
func (r Rules) Remove(ctx context.Context) error {
	t := r.Table()
	return nft(ctx, fmt.Sprintf("table ip %[1]s {}\ndelete table ip %[1]s\ntable bridge %[1]s {}\ndelete table bridge %[1]s\n", t))
}

// VM is what the rules know of one VM.
type VM struct {
	TAP string
	MAC string
	IP  netip.Addr
}

// AddVM lets the VM's TAP send from its own MAC and IP, and pins the
// VM's MAC to its TAP on the bridge: the port learns nothing and floods
// no unknown unicast (see lockPort), and a static forwarding entry sends
// the VM's MAC there and nowhere else. The TAP must exist.
func (r Rules) AddVM(v VM) error {
	if err := r.elements(v, true); err != nil {
		return err
	}
	return r.pin(v, true)
}

// RemoveVM forgets the VM, its forwarding entry first; elements already
// gone (or a TAP already gone) are not an error.
func (r Rules) RemoveVM(v VM) error {
	if err := r.pin(v, false); err != nil {
		return err
	}
	return r.elements(v, false)
}

func (r Rules) elements(v VM, add bool) error {
	mac, err := net.ParseMAC(v.MAC)
	if err != nil || len(mac) != 6 {
		return fmt.Errorf("vm rules: mac %q: %v", v.MAC, err)
	}
	if !v.IP.Is4() || len(v.TAP) == 0 || len(v.TAP) > 15 {
		return fmt.Errorf("vm rules: bad tap %q or address %s", v.TAP, v.IP)
	}
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("vm rules: netlink: %w", err)
	}
	// The sets exist since Apply: naming them is enough, no look-up.
	table := &nftables.Table{Name: r.Table(), Family: nftables.TableFamilyBridge}
	taps := &nftables.Set{Table: table, Name: "taps"}
	allowed := &nftables.Set{Table: table, Name: "allowed"}
	ifname := ifnameKey(v.TAP)
	// A concatenation's fields are each padded to 4 bytes.
	key := slices.Concat(ifname, mac, []byte{0, 0}, v.IP.AsSlice())
	op := c.SetAddElements
	if !add {
		op = c.SetDeleteElements
	}
	if err := op(taps, []nftables.SetElement{{Key: ifname}}); err != nil {
		return fmt.Errorf("vm rules: %w", err)
	}
	if err := op(allowed, []nftables.SetElement{{Key: key}}); err != nil {
		return fmt.Errorf("vm rules: %w", err)
	}
	if err := c.Flush(); err != nil {
		if !add && strings.Contains(err.Error(), "no such file") {
			return nil
		}
		return fmt.Errorf("vm rules: tap %s: %w", v.TAP, err)
	}
	return nil
}

// ifnameKey is an interface name as nftables stores it: 16 bytes, NUL
// padded.
func ifnameKey(name string) []byte {
	b := make([]byte, 16)
	copy(b, name)
	return b
}

func nft(ctx context.Context, script string) error {
	cmd := exec.CommandContext(ctx, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("nft: %w: %s", err, strings.TrimSpace(out.String()))
	}
	return nil
}
