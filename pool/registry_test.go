package pool

import (
	"slices"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/config"
	"github.com/nixos-fireactions/nixos-fireactions/vmstate"
)

// The guests get the registry cache's mirrors, proxy and CA as they are,
// unless their pool bypasses it; Docker whenever their pool asks.
func TestGuestRegistry(t *testing.T) {
	c := &config.Config{RegistryCache: config.RegistryCache{
		Mirrors: []config.CacheMirror{
			{Registry: "docker.io", URLs: []string{"http://10.200.0.1:5000"}},
			{Registry: "ghcr.io", URLs: []string{"http://10.200.0.1:5000/ghcr.io", "https://backup.example/ghcr.io"}},
		},
		HTTPProxy: "http://u:p$1@10.200.0.1:3128", HTTPSProxy: "http://10.200.0.1:3128",
		NoProxy: []string{"localhost", "10.200.0.1"}, CA: []byte("PEM"),
	}}
	r := GuestRegistry(c, &config.Pool{Cache: config.PoolCache{Docker: true}})
	if r == nil || !r.Docker || r.HTTPProxy != "http://u:p$1@10.200.0.1:3128" || r.HTTPSProxy != "http://10.200.0.1:3128" ||
		r.NoProxy != "localhost,10.200.0.1" || string(r.CA) != "PEM" ||
		!slices.Equal(r.Mirrors["ghcr.io"], []string{"http://10.200.0.1:5000/ghcr.io", "https://backup.example/ghcr.io"}) ||
		!slices.Equal(r.Mirrors["docker.io"], []string{"http://10.200.0.1:5000"}) {
		t.Fatalf("registry %+v", r)
	}
	if r := GuestRegistry(c, &config.Pool{Cache: config.PoolCache{Bypass: true, Docker: true}}); r == nil || !r.Docker || r.Mirrors != nil || r.HTTPProxy != "" || r.CA != nil {
		t.Fatalf("bypassing pool with Docker: %+v", r)
	}
	if r := GuestRegistry(c, &config.Pool{Cache: config.PoolCache{Bypass: true}}); r != nil {
		t.Fatalf("bypassing pool: %+v", r)
	}
	if r := GuestRegistry(&config.Config{}, &config.Pool{}); r != nil {
		t.Fatalf("no cache: %+v", r)
	}
}

// The VMs' agent configuration carries it.
func TestVMConfigCarriesTheRegistry(t *testing.T) {
	h := newHarness(t, 1, 1, guestRunsOneJob, func(p *config.Pool) { p.Cache.Docker = true })
	eventually(t, 2*time.Second, "VM ready", func() bool { return h.m.Phases()[vmstate.Idle] == 1 })
	h.boot.Lock()
	defer h.boot.Unlock()
	if len(h.boot.Configs) == 0 {
		t.Fatal("no VM config written")
	}
	for id, cfg := range h.boot.Configs {
		if cfg.Registry == nil || !cfg.Registry.Docker {
			t.Fatalf("vm %s: registry %+v, want dockerd asked for", id, cfg.Registry)
		}
	}
}
