package agent

import (
	"fmt"
	"net/netip"
	"net/url"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
)

// dockerNets are Docker's subnets in the guest: the default bridge's
// address (daemon.json "bip") and the pool user-defined networks are
// carved from ("default-address-pools"). Docker's own defaults
// (172.17.0.0/16, then 172.18-31 and 192.168) may be where the host's VM
// network, its gateway or the registry cache is: a job's container would
// then route the cache's address into its own bridge.
type dockerNets struct {
	bip  string       // "172.17.0.1/16"
	pool netip.Prefix // split into /24s
}

// dockerCandidates are the /16s Docker's subnets are chosen from, in
// order: Docker's own first.
func dockerCandidates() []netip.Prefix {
	var out []netip.Prefix
	for b := 17; b <= 31; b++ {
		out = append(out, netip.PrefixFrom(netip.AddrFrom4([4]byte{172, byte(b), 0, 0}), 16))
	}
	for b := 0; b <= 255; b++ {
		out = append(out, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(b), 0, 0}), 16))
	}
	return out
}

// chooseDockerNets picks the first two candidate /16s that overlap none of
// avoid: the first for the bridge, the second for the pool.
func chooseDockerNets(avoid []netip.Prefix) (dockerNets, error) {
	var free []netip.Prefix
	for _, c := range dockerCandidates() {
		clash := false
		for _, a := range avoid {
			if a.Overlaps(c) {
				clash = true
				break
			}
		}
		if !clash {
			if free = append(free, c); len(free) == 2 {
				bip := netip.PrefixFrom(free[0].Addr().Next(), 16)
				return dockerNets{bip: bip.String(), pool: free[1]}, nil
			}
		}
	}
	return dockerNets{}, fmt.Errorf("no subnet for Docker's bridge: 172.17-31.0.0/16 and 10.0-255.0.0/16 all overlap the VM's network, gateway, DNS or registry cache %v", avoid)
}

// dockerAvoid is what Docker's subnets must not overlap: the VM's
// network, its gateway and DNS servers, the host's agent listener, and
// the registry mirrors and proxies given as addresses (a name is resolved
// later, by dockerd; it cannot be known here).
func dockerAvoid(n agentproto.Network, reportURL string, reg *agentproto.Registry) []netip.Prefix {
	var out []netip.Prefix
	if p, err := netip.ParsePrefix(n.Address); err == nil {
		out = append(out, p.Masked())
	}
	addAddr := func(s string) {
		if a, err := netip.ParseAddr(s); err == nil {
			out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
		}
	}
	addURL := func(s string) {
		if u, err := url.Parse(s); err == nil {
			addAddr(u.Hostname())
		}
	}
	addAddr(n.Gateway)
	for _, d := range n.DNS {
		addAddr(d)
	}
	addURL(reportURL)
	if reg != nil {
		for _, urls := range reg.Mirrors {
			for _, u := range urls {
				addURL(u)
			}
		}
		addURL(reg.HTTPProxy)
		addURL(reg.HTTPSProxy)
	}
	return out
}
