package agent

import (
	"fmt"
	"net"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
)

// LinkWait is how long ConfigureNetwork waits for the interface to appear
// (its driver may still be probing the device).
const LinkWait = 5 * time.Second

// netPlan is the guest's network config, parsed and checked.
type netPlan struct {
	iface   string
	addr    *net.IPNet // host address with the subnet's mask
	gateway net.IP     // nil: no default route
	mtu     int
}

func ifaceName(n agentproto.Network) string {
	if n.Interface == "" {
		return "eth0"
	}
	return n.Interface
}

// planNetwork parses the config's address and gateway.
func planNetwork(n agentproto.Network) (netPlan, error) {
	p := netPlan{iface: ifaceName(n), mtu: n.MTU}
	ip, subnet, err := net.ParseCIDR(n.Address)
	if err != nil {
		return p, fmt.Errorf("address %q: %w", n.Address, err)
	}
	p.addr = &net.IPNet{IP: ip, Mask: subnet.Mask}
	if n.Gateway != "" {
		if p.gateway = net.ParseIP(n.Gateway); p.gateway == nil {
			return p, fmt.Errorf("gateway %q is not an IP address", n.Gateway)
		}
		if (p.gateway.To4() == nil) != (ip.To4() == nil) {
			return p, fmt.Errorf("gateway %s and address %s are not the same IP version", n.Gateway, n.Address)
		}
	}
	if n.MTU < 0 || n.MTU > 65535 {
		return p, fmt.Errorf("MTU %d out of range", n.MTU)
	}
	return p, nil
}
