package daemon

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
	"github.com/nixos-fireactions/nixos-fireactions/catalog"
	"github.com/nixos-fireactions/nixos-fireactions/config"
	"github.com/nixos-fireactions/nixos-fireactions/initramfs"
)

// bootFiles writes VM initramfs files from per-pool boot archives built
// at start-up and again on a reload.
type bootFiles struct {
	agent, dir string

	mu       sync.Mutex
	gen      int                            // generation of the archives in use
	archives map[string]string              // pool -> boot archive
	modules  map[string][]string            // pool -> module paths in the guest
	docker   map[string]map[string][]string // pool -> iptables back end -> module paths
}

func newBootFiles(cfg *config.Config, agent string, dir string) (*bootFiles, error) {
	if _, err := os.Stat(agent); err != nil {
		return nil, fmt.Errorf("guest agent: %w", err)
	}
	b := &bootFiles{agent: agent, dir: dir}
	st, err := b.stage(cfg)
	if err != nil {
		return nil, err
	}
	st.commit()
	return b, nil
}

// stagedBoot is a generation of boot archives written but not in use yet:
// commit puts it in use, abort removes its files.
type stagedBoot struct {
	b        *bootFiles
	gen      int
	archives map[string]string
	modules  map[string][]string
	// docker are, for a pool that asks for Docker, the modules its guests
	// load by their image's iptables back end (initramfs.NFT, Legacy).
	docker map[string]map[string][]string
}

// stage builds the boot archives of cfg's pools as a new generation, in
// files of their own beside the ones in use, which stay in use, unchanged,
// until commit: a reload that fails later (an image that cannot be
// pulled) aborts, and the running pools go on building their VMs from
// the archives they had.
func (b *bootFiles) stage(cfg *config.Config) (*stagedBoot, error) {
	b.mu.Lock()
	gen := b.gen + 1
	b.mu.Unlock()
	st := &stagedBoot{b: b, gen: gen, archives: map[string]string{}, modules: map[string][]string{}, docker: map[string]map[string][]string{}}
	for _, p := range cfg.Pools {
		var mods []initramfs.Module
		if names := initramfs.ModulesFor(poolModules(&p, cfg.VMM.Driver), p.Cache.Docker); len(names) > 0 {
			var err error
			if mods, err = initramfs.ResolveModules(p.VM.ModulesDir, names); err != nil {
				st.abort()
				return nil, fmt.Errorf("pool %q: kernel modules: %w", p.Name, err)
			}
			if p.Cache.Docker {
				if st.docker[p.Name], err = initramfs.DockerBackendModules(p.VM.ModulesDir, poolModules(&p, cfg.VMM.Driver), mods); err != nil {
					st.abort()
					return nil, fmt.Errorf("pool %q: kernel modules: %w", p.Name, err)
				}
			}
		}
		pdir := filepath.Join(b.dir, p.Name)
		if err := os.MkdirAll(pdir, 0o700); err != nil {
			st.abort()
			return nil, fmt.Errorf("pool %q: %w", p.Name, err)
		}
		archive := filepath.Join(pdir, fmt.Sprintf("boot-%d.cpio", gen))
		boot := initramfs.Boot{RootArchive: p.VM.RootInitramfs, Agent: b.agent, Modules: mods}
		if err := boot.WritePool(archive); err != nil {
			st.abort()
			return nil, fmt.Errorf("pool %q: write boot archive: %w", p.Name, err)
		}
		st.archives[p.Name] = archive
		st.modules[p.Name] = initramfs.GuestPaths(mods)
	}
	return st, nil
}

// commit puts the staged archives in use. The files of the generation
// before the one just replaced go: a VM being created may still read the
// one just replaced.
func (st *stagedBoot) commit() {
	b := st.b
	b.mu.Lock()
	prev := b.archives
	b.gen, b.archives, b.modules, b.docker = st.gen, st.archives, st.modules, st.docker
	b.mu.Unlock()
	keep := map[string]bool{}
	for _, a := range prev {
		keep[a] = true
	}
	for _, a := range st.archives {
		keep[a] = true
	}
	for _, a := range st.archives {
		old, _ := filepath.Glob(filepath.Join(filepath.Dir(a), "boot*.cpio"))
		for _, f := range old {
			if !keep[f] {
				_ = os.Remove(f)
			}
		}
	}
}

// abort removes the staged files; the archives in use stay.
func (st *stagedBoot) abort() {
	for _, a := range st.archives {
		_ = os.Remove(a)
	}
}

// poolModules is pool's kernel_modules and, for a warm-start pool, the
// driver of the identity channel its VMM gives it: QEMU's virtio-serial
// port (virtio_console), Firecracker's vsock device
// (vmw_vsock_virtio_transport, which needs vsock). A pool that lists no
// modules boots a kernel with its drivers built in.
func poolModules(p *config.Pool, driver string) []string {
	mods := p.VM.KernelModules
	if !p.WarmStart || len(mods) == 0 {
		return mods
	}
	need := []string{"virtio_console"}
	if driver == catalog.Firecracker {
		need = []string{"vsock", "vmw_vsock_virtio_transport_common", "vmw_vsock_virtio_transport"}
	}
	for _, m := range need {
		if !slices.Contains(mods, m) {
			mods = append(slices.Clip(mods), m)
		}
	}
	return mods
}

// guestModules are the modules a VM of pool loads: a guest of an image
// whose iptables back end is known (root.Netfilter) only that back end's
// Docker modules, though the pool's archive holds both. b.mu is held.
func (b *bootFiles) guestModules(pool string, root *agentproto.Root) []string {
	if root != nil {
		if mods, ok := b.docker[pool][root.Netfilter]; ok {
			return mods
		}
	}
	return b.modules[pool]
}

// WriteVM implements pool.BootFiles.
func (b *bootFiles) WriteVM(pool, dst string, cfg agentproto.Config) error {
	b.mu.Lock()
	archive, ok := b.archives[pool]
	cfg.Modules = b.guestModules(pool, cfg.Root)
	b.mu.Unlock()
	if !ok {
		return fmt.Errorf("pool %q has no boot archive", pool)
	}
	return initramfs.WriteVM(dst, archive, cfg)
}
