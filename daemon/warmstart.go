package daemon

import (
	"path/filepath"

	"github.com/nixos-fireactions/nixos-fireactions/config"
	"github.com/nixos-fireactions/nixos-fireactions/metrics"
	"github.com/nixos-fireactions/nixos-fireactions/pool"
)

var _ pool.TemplateCounter = (*metrics.WarmStarts)(nil)

// warmDeps are the pool manager's warm-start dependencies.
type warmDeps struct {
	TemplateDir string
	Agent       string
	WarmStarts  *metrics.WarmStarts
}

// warmStartDeps are the warm-start pools' template directory
// (<state_dir>/templates), the guest agent binary (the pool manager
// hashes it into each template's key when it builds one, so a pool a
// reload turns warm is keyed by it too) and the warm-start metrics. They
// are the same whether or not a pool has warm_start now.
func warmStartDeps(cfg *config.Config, agent string, mx *metrics.Metrics) warmDeps {
	return warmDeps{TemplateDir: filepath.Join(cfg.StateDir, "templates"), Agent: agent, WarmStarts: mx.WarmStarts()}
}
