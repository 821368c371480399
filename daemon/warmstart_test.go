package daemon

import (
	"path/filepath"
	"testing"

	"github.com/nixos-fireactions/nixos-fireactions/config"
	"github.com/nixos-fireactions/nixos-fireactions/metrics"
)

// The pool manager gets the agent binary whether or not a pool
// warm-starts at start: a reload may make one warm, and its template's
// key must name the agent (pool's
// TestTemplateOfAPoolAReloadMakesWarmIsKeyedByTheAgent); templates live
// in the state directory.
func TestWarmStartDeps(t *testing.T) {
	dir := t.TempDir()
	agent := filepath.Join(dir, "fireactions-agent")
	for _, pools := range [][]config.Pool{{{Name: "cold"}}, {{Name: "cold"}, {Name: "warm", WarmStart: true}}} {
		cfg := &config.Config{StateDir: dir, Pools: pools}
		d := warmStartDeps(cfg, agent, metrics.New(dir))
		if d.Agent != agent || d.TemplateDir != filepath.Join(dir, "templates") || d.WarmStarts == nil {
			t.Fatalf("pools %+v: %+v; want the agent %s, templates in the state directory", pools, d, agent)
		}
	}
}
