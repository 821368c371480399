package pool

import (
	"strings"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
	"github.com/nixos-fireactions/nixos-fireactions/config"
)

// GuestRegistry is what a pool's guests get of the host's registry cache:
// its mirrors, proxy and CA unless the pool bypasses it, and whether
// dockerd starts. Nil when there is nothing to give.
func GuestRegistry(c *config.Config, p *config.Pool) *agentproto.Registry {
	r := &agentproto.Registry{Docker: p.Cache.Docker}
	if rc := c.RegistryCache; !p.Cache.Bypass {
		for _, m := range rc.Mirrors {
			if r.Mirrors == nil {
				r.Mirrors = map[string][]string{}
			}
			r.Mirrors[m.Registry] = append(r.Mirrors[m.Registry], m.URLs...)
		}
		r.HTTPProxy, r.HTTPSProxy = rc.HTTPProxy, rc.HTTPSProxy
		r.NoProxy = strings.Join(rc.NoProxy, ",")
		r.CA = rc.CA
	}
	if r.Mirrors == nil && r.HTTPProxy == "" && r.HTTPSProxy == "" && len(r.CA) == 0 && !r.Docker {
		return nil
	}
	return r
}
