package agent

import (
	"encoding/json"
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
	// avoid are the subnets chosen around (see dockerAvoid): an image's
	// own daemon.json subnets are checked against them.
	avoid []netip.Prefix
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
				return dockerNets{bip: bip.String(), pool: free[1], avoid: avoid}, nil
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

// checkImageNets checks the subnets an image's daemon.json sets itself
// ("bip", "default-address-pools"), which the guest keeps, against what
// Docker's subnets must not overlap: a collision is an error naming the
// field, rather than a dockerd whose bridge swallows the VM's gateway or
// the registry cache. A value dockerd could not parse either is left for
// dockerd to refuse.
func checkImageNets(doc map[string]json.RawMessage, avoid []netip.Prefix) error {
	clash := func(field, value string) error {
		p, err := netip.ParsePrefix(value)
		if err != nil {
			return nil
		}
		for _, a := range avoid {
			if a.Overlaps(p.Masked()) {
				return fmt.Errorf("the image's /etc/docker/daemon.json %q %s overlaps %s, which the VM's network, gateway, DNS, the host's agent, registry mirror or proxy use: remove %q from the image's daemon.json (the guest then picks a free subnet) or set one clear of them", field, value, a, field)
			}
		}
		return nil
	}
	if raw, ok := doc["bip"]; ok {
		var bip string
		if json.Unmarshal(raw, &bip) == nil {
			if err := clash("bip", bip); err != nil {
				return err
			}
		}
	}
	if raw, ok := doc["default-address-pools"]; ok {
		var pools []struct {
			Base string `json:"base"`
		}
		if json.Unmarshal(raw, &pools) == nil {
			for _, p := range pools {
				if err := clash("default-address-pools", p.Base); err != nil {
					return err
				}
			}
		}
	}
	return nil
}
