package daemon

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nixos-fireactions/nixos-fireactions/config"
)

// A daemon that started without image pools opens its image store when a
// reload adds the first one, and pulls its image before the reload is
// done: the new pool's VMs do not boot without their root. Here the
// registry refuses, so the reload fails naming the pool, and nothing
// changes.
func TestReloadAddingTheFirstImagePoolPullsItsImage(t *testing.T) {
	cfg := config.Defaults()
	cfg.StateDir = t.TempDir()
	cfg.Images.Dir = filepath.Join(t.TempDir(), "images")
	r, err := openImageRoots(&cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := os.Stat(cfg.Images.Dir); err == nil {
		t.Fatal("the image store was opened without an image pool")
	}
	if err := r.Reload(t.Context(), cfg.Pools); err != nil {
		t.Fatalf("a reload without image pools: %v", err)
	}

	p := config.PoolDefaults()
	p.Name, p.VM.Image, p.Runner.Path = "imgpool", "127.0.0.1:1/ci/runner:v1", "/bin/act_runner"
	err = r.Reload(t.Context(), []config.Pool{p})
	if err == nil || !strings.Contains(err.Error(), `pool "imgpool"`) {
		t.Fatalf("reload adding an image pool whose registry is down: %v, want an error naming the pool", err)
	}
	if _, err := os.Stat(cfg.Images.Dir); err != nil {
		t.Fatalf("the reload did not open the image store: %v", err)
	}
	if _, ok, err := r.PrepareVM(t.Context(), "imgpool", t.TempDir()); ok || err != nil {
		t.Fatalf("after the refused reload the pool has a root: ok %v, err %v", ok, err)
	}
}
