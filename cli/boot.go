package cli

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
	"github.com/nixos-fireactions/nixos-fireactions/config"
	"github.com/nixos-fireactions/nixos-fireactions/initramfs"
)

// bootFiles writes VM initramfs files from per-pool boot archives built
// once at start-up.
type bootFiles struct {
	archives map[string]string   // pool -> boot archive
	modules  map[string][]string // pool -> module paths in the guest
}

func newBootFiles(cfg *config.Config, agent string, dir string) (*bootFiles, error) {
	if _, err := os.Stat(agent); err != nil {
		return nil, fmt.Errorf("guest agent: %w", err)
	}
	b := &bootFiles{archives: map[string]string{}, modules: map[string][]string{}}
	for _, p := range cfg.Pools {
		var mods []initramfs.Module
		if len(p.VM.KernelModules) > 0 {
			var err error
			if mods, err = initramfs.ResolveModules(p.VM.ModulesDir, p.VM.KernelModules); err != nil {
				return nil, fmt.Errorf("pool %q: kernel modules: %w", p.Name, err)
			}
		}
		pdir := filepath.Join(dir, p.Name)
		if err := os.MkdirAll(pdir, 0o700); err != nil {
			return nil, fmt.Errorf("pool %q: %w", p.Name, err)
		}
		archive := filepath.Join(pdir, "boot.cpio")
		boot := initramfs.Boot{RootArchive: p.VM.RootInitramfs, Agent: agent, Modules: mods}
		if err := boot.WritePool(archive); err != nil {
			return nil, fmt.Errorf("pool %q: write boot archive: %w", p.Name, err)
		}
		b.archives[p.Name] = archive
		b.modules[p.Name] = initramfs.GuestPaths(mods)
	}
	return b, nil
}

// WriteVM implements pool.BootFiles.
func (b *bootFiles) WriteVM(pool, dst string, cfg agentproto.Config) error {
	archive, ok := b.archives[pool]
	if !ok {
		return fmt.Errorf("pool %q has no boot archive", pool)
	}
	cfg.Modules = b.modules[pool]
	return initramfs.WriteVM(dst, archive, cfg)
}
