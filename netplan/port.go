package netplan

import (
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// lockPort sets a VM's bridge port so it never learns and never receives
// what is not its own:
//
//   - learning off: a frame a guest sends never moves a MAC to its port
//     (the nftables guard drops spoofed sources first; this holds even
//     without it);
//   - unicast and multicast flooding off: frames for a MAC the bridge has
//     no entry for (a VM gone, an entry aged out) go to no VM; each VM's
//     own MAC has a static entry on its port instead (pin);
//   - broadcast flooding on: the host's ARP requests for a VM's address
//     must reach it;
//   - isolated: no frame passes between two VM ports at the bridge level
//     (the bridge table's forward chain drops them too).
//
// One netlink request, as `bridge link set dev TAP learning off flood off
// mcast_flood off bcast_flood on isolated on`.
func lockPort(link netlink.Link) error {
	req := nl.NewNetlinkRequest(unix.RTM_SETLINK, unix.NLM_F_ACK)
	msg := nl.NewIfInfomsg(unix.AF_BRIDGE)
	msg.Index = int32(link.Attrs().Index)
	req.AddData(msg)
	pi := nl.NewRtAttr(unix.IFLA_PROTINFO|unix.NLA_F_NESTED, nil)
	for attr, on := range map[int]bool{
		nl.IFLA_BRPORT_LEARNING:      false,
		nl.IFLA_BRPORT_UNICAST_FLOOD: false,
		nl.IFLA_BRPORT_MCAST_FLOOD:   false,
		nl.IFLA_BRPORT_BCAST_FLOOD:   true,
		nl.IFLA_BRPORT_ISOLATED:      true,
	} {
		v := byte(0)
		if on {
			v = 1
		}
		pi.AddRtAttr(attr, []byte{v})
	}
	req.AddData(pi)
	if _, err := req.Execute(unix.NETLINK_ROUTE, 0); err != nil {
		return fmt.Errorf("tap %s: lock bridge port: %w", link.Attrs().Name, err)
	}
	return nil
}

// pin adds (or removes) the static forwarding entry of the VM's MAC on its
// TAP, locking the port first when adding (a TAP an older version made and
// a restart adopts is locked here too).
func (r Rules) pin(v VM, add bool) error {
	mac, err := net.ParseMAC(v.MAC)
	if err != nil || len(mac) != 6 {
		return fmt.Errorf("vm fdb: mac %q: %v", v.MAC, err)
	}
	link, err := netlink.LinkByName(v.TAP)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if !add && errors.As(err, &nf) {
			return nil // gone with its TAP
		}
		return fmt.Errorf("vm fdb: tap %s: %w", v.TAP, err)
	}
	entry := &netlink.Neigh{
		LinkIndex:    link.Attrs().Index,
		Family:       unix.AF_BRIDGE,
		State:        netlink.NUD_NOARP, // static: never ages, never moves
		Flags:        netlink.NTF_MASTER,
		HardwareAddr: mac,
	}
	if !add {
		if err := netlink.NeighDel(entry); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ENODEV) {
			return fmt.Errorf("vm fdb: tap %s: remove %s: %w", v.TAP, mac, err)
		}
		return nil
	}
	if link.Attrs().MasterIndex == 0 {
		return fmt.Errorf("vm fdb: tap %s is on no bridge", v.TAP)
	}
	if err := lockPort(link); err != nil {
		return err
	}
	if err := netlink.NeighSet(entry); err != nil {
		return fmt.Errorf("vm fdb: tap %s: add %s: %w", v.TAP, mac, err)
	}
	return nil
}
