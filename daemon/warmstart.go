package daemon

import (
	"path/filepath"

	"github.com/nixos-fireactions/nixos-fireactions/config"
	"github.com/nixos-fireactions/nixos-fireactions/metrics"
	"github.com/nixos-fireactions/nixos-fireactions/pool"
	"github.com/nixos-fireactions/nixos-fireactions/warmstart"
)

var _ pool.TemplateCounter = (*metrics.WarmStarts)(nil)

// warmDeps are the pool manager's warm-start dependencies.
type warmDeps struct {
	TemplateDir string
	AgentDigest string
	WarmStarts  *metrics.WarmStarts
}

// warmStartDeps are the warm-start pools' template directory
// (<state_dir>/templates), the agent's digest (part of each template's
// key) and the warm-start metrics; the agent is hashed only when a pool
// has warm_start.
func warmStartDeps(cfg *config.Config, agent string, mx *metrics.Metrics) (warmDeps, error) {
	d := warmDeps{TemplateDir: filepath.Join(cfg.StateDir, "templates"), WarmStarts: mx.WarmStarts()}
	for _, p := range cfg.Pools {
		if !p.WarmStart {
			continue
		}
		digest, err := warmstart.FileDigest(agent)
		if err != nil {
			return d, err
		}
		d.AgentDigest = digest
		break
	}
	return d, nil
}
