package daemon

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/nixos-fireactions/nixos-fireactions/config"
	"github.com/nixos-fireactions/nixos-fireactions/pool"
	"github.com/nixos-fireactions/nixos-fireactions/vmstate"
)

// reloadRig is what the reload tests start from: the files their
// configurations name (a kernel, a Gitea token, the agent) in one
// directory, and, once started, the daemon serve builds from the running
// configuration, short of serving: its boot files, forge drivers and
// pool manager.
type reloadRig struct {
	t                         *testing.T
	dir, kernel, token, agent string
	state                     string
	boot                      *bootFiles
	drivers                   *forgeSet
	m                         *pool.Manager
}

func newReloadRig(t *testing.T) *reloadRig {
	t.Helper()
	r := &reloadRig{t: t, dir: t.TempDir()}
	r.kernel = r.write("bzImage", "kernel")
	r.token = r.write("token", "gitea-token")
	r.agent = r.write("agent", "agent binary")
	r.state = filepath.Join(r.dir, "state")
	return r
}

// write writes content to the rig's file name and returns its path.
func (r *reloadRig) write(name, content string) string {
	r.t.Helper()
	p := filepath.Join(r.dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		r.t.Fatal(err)
	}
	return p
}

// config writes the rig's configuration file and returns its path:
// Gitea forge g at gURL and pool p of it booting root, then the YAML list
// items forges adds to forges and pools to pools.
func (r *reloadRig) config(gURL, root, forges, pools string) string {
	r.t.Helper()
	return r.write("config.yaml", fmt.Sprintf(`host_id: h
state_dir: %s
images: {dir: %s}
forges:
  - {name: g, type: gitea, url: %q, token_file: %s}
%spools:
  - name: p
    forge: g
    labels: [linux]
    vm: {kernel: %s, root_initramfs: %s}
%s`, r.state, filepath.Join(r.dir, "images"), gURL, r.token, forges, r.kernel, root, pools))
}

// start loads the configuration at path as the running one and builds
// what serve builds from it, logging to log; it returns the
// configuration.
func (r *reloadRig) start(path string, log *slog.Logger) *config.Config {
	r.t.Helper()
	running, err := config.Load(path)
	if err != nil {
		r.t.Fatal(err)
	}
	if r.boot, err = newBootFiles(running, r.agent, filepath.Join(r.state, "pools")); err != nil {
		r.t.Fatal(err)
	}
	roots, err := openImageRoots(running, log)
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { roots.Close() })
	drivers, forges, err := connectForges(running, "dev")
	if err != nil {
		r.t.Fatal(err)
	}
	r.drivers = drivers
	store, err := vmstate.Open(filepath.Join(r.state, "vms"))
	if err != nil {
		r.t.Fatal(err)
	}
	r.m, err = pool.New(pool.Deps{Config: running, Forges: forges, Store: store, Boot: r.boot, Roots: roots, Log: log})
	if err != nil {
		r.t.Fatal(err)
	}
	return running
}
