package agent

import (
	"context"
	"fmt"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
	"github.com/vishvananda/netlink"
)

// configureNetwork brings up lo, waits for the interface, then sets its
// address, MTU, up state and default route over netlink (the guest kernel
// ignores ip=). It does not wait for the carrier: that costs about a second,
// and the reporter's retries absorb an early dropped SYN instead.
func configureNetwork(ctx context.Context, n agentproto.Network, wait time.Duration) error {
	plan, err := planNetwork(n)
	if err != nil {
		return err
	}
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("finding lo: %w", err)
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return fmt.Errorf("setting lo up: %w", err)
	}
	link, err := waitLink(ctx, plan.iface, wait)
	if err != nil {
		return err
	}
	if plan.mtu > 0 {
		if err := netlink.LinkSetMTU(link, plan.mtu); err != nil {
			return fmt.Errorf("setting MTU %d on %s: %w", plan.mtu, plan.iface, err)
		}
	}
	if err := netlink.AddrReplace(link, &netlink.Addr{IPNet: plan.addr}); err != nil {
		return fmt.Errorf("adding address %s to %s: %w", plan.addr, plan.iface, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("setting %s up: %w", plan.iface, err)
	}
	if plan.gateway != nil {
		route := &netlink.Route{LinkIndex: link.Attrs().Index, Gw: plan.gateway}
		if err := netlink.RouteReplace(route); err != nil {
			return fmt.Errorf("adding default route via %s: %w", plan.gateway, err)
		}
	}
	return nil
}

// waitLink polls for the interface until it appears or wait ends.
func waitLink(ctx context.Context, name string, wait time.Duration) (netlink.Link, error) {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		link, err := netlink.LinkByName(name)
		if err == nil {
			return link, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("interface %s did not appear within %s: %w", name, wait, err)
		case <-tick.C:
		}
	}
}
