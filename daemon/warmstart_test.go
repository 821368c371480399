package daemon

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/nixos-fireactions/nixos-fireactions/config"
	"github.com/nixos-fireactions/nixos-fireactions/metrics"
	"github.com/nixos-fireactions/nixos-fireactions/warmstart"
)

// The agent is part of a template's key only when a pool warm-starts
// (hashing it otherwise is start-up time for nothing); templates live in
// the state directory.
func TestWarmStartDeps(t *testing.T) {
	dir := t.TempDir()
	agent := filepath.Join(dir, "fireactions-agent")
	os.WriteFile(agent, []byte("agent v1"), 0o755)
	want, _ := warmstart.FileDigest(agent)
	cfg := &config.Config{StateDir: dir, Pools: []config.Pool{{Name: "cold"}}}
	d, err := warmStartDeps(cfg, agent, metrics.New(dir))
	if err != nil || d.AgentDigest != "" || d.TemplateDir != filepath.Join(dir, "templates") || d.WarmStarts == nil {
		t.Fatalf("no warm pool: %+v, %v", d, err)
	}
	cfg.Pools = append(cfg.Pools, config.Pool{Name: "warm", WarmStart: true})
	if d, err = warmStartDeps(cfg, agent, metrics.New(dir)); err != nil || d.AgentDigest != want {
		t.Fatalf("a warm pool: %+v, %v; want the agent's digest %s", d, err, want)
	}
	os.Remove(agent)
	if _, err = warmStartDeps(cfg, agent, metrics.New(dir)); err == nil {
		t.Fatal("a warm pool without its agent: no error")
	}
}
