package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
	"github.com/nixos-fireactions/nixos-fireactions/config"
	"github.com/nixos-fireactions/nixos-fireactions/initramfs"
)

// bootFiles writes VM initramfs files from per-pool boot archives built
// at start-up and again on a reload.
type bootFiles struct {
	agent, dir string

	mu       sync.Mutex
	archives map[string]string   // pool -> boot archive
	modules  map[string][]string // pool -> module paths in the guest
}

func newBootFiles(cfg *config.Config, agent string, dir string) (*bootFiles, error) {
	if _, err := os.Stat(agent); err != nil {
		return nil, fmt.Errorf("guest agent: %w", err)
	}
	b := &bootFiles{agent: agent, dir: dir}
	if err := b.update(cfg); err != nil {
		return nil, err
	}
	return b, nil
}

// update builds the boot archives of cfg's pools; archives are replaced
// atomically, so VMs being created meanwhile read a whole one.
func (b *bootFiles) update(cfg *config.Config) error {
	agent, dir := b.agent, b.dir
	archives, modules := map[string]string{}, map[string][]string{}
	for _, p := range cfg.Pools {
		var mods []initramfs.Module
		if len(p.VM.KernelModules) > 0 {
			var err error
			if mods, err = initramfs.ResolveModules(p.VM.ModulesDir, p.VM.KernelModules); err != nil {
				return fmt.Errorf("pool %q: kernel modules: %w", p.Name, err)
			}
		}
		pdir := filepath.Join(dir, p.Name)
		if err := os.MkdirAll(pdir, 0o700); err != nil {
			return fmt.Errorf("pool %q: %w", p.Name, err)
		}
		archive := filepath.Join(pdir, "boot.cpio")
		boot := initramfs.Boot{RootArchive: p.VM.RootInitramfs, Agent: agent, Modules: mods}
		if err := boot.WritePool(archive); err != nil {
			return fmt.Errorf("pool %q: write boot archive: %w", p.Name, err)
		}
		archives[p.Name] = archive
		modules[p.Name] = initramfs.GuestPaths(mods)
	}
	b.mu.Lock()
	b.archives, b.modules = archives, modules
	b.mu.Unlock()
	return nil
}

// WriteVM implements pool.BootFiles.
func (b *bootFiles) WriteVM(pool, dst string, cfg agentproto.Config) error {
	b.mu.Lock()
	archive, ok := b.archives[pool]
	cfg.Modules = b.modules[pool]
	b.mu.Unlock()
	if !ok {
		return fmt.Errorf("pool %q has no boot archive", pool)
	}
	return initramfs.WriteVM(dst, archive, cfg)
}
