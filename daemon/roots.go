package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/config"
	"github.com/nixos-fireactions/nixos-fireactions/imagestore"
	"github.com/nixos-fireactions/nixos-fireactions/pool"
	"github.com/nixos-fireactions/nixos-fireactions/vmroot"
)

// OpenImageStore opens the image store the configuration describes, with
// its registry credentials and mirrors: the daemon's, and the one the
// image commands fill before it runs.
func OpenImageStore(cfg *config.Config, log *slog.Logger) (*imagestore.Store, error) {
	var creds []imagestore.Credential
	for _, c := range cfg.Images.Credentials {
		creds = append(creds, imagestore.Credential{Registry: c.Registry, Username: c.Username, Password: c.Password})
	}
	kc, err := imagestore.NewKeychain(cfg.Images.DockerConfig, creds)
	if err != nil {
		return nil, err
	}
	mirrors := map[string][]string{}
	for _, m := range cfg.PullMirrors() { // images.mirrors, then registry_cache.mirrors
		k := imagestore.RegistryKey(m.Registry)
		mirrors[k] = append(mirrors[k], m.URLs...)
	}
	return imagestore.Open(imagestore.Options{
		Dir: cfg.Images.Dir, MaxBytes: cfg.Images.MaxBytes, FSType: cfg.Images.FSType,
		Downloads: cfg.Images.MaxConcurrentDownloads,
		Mirrors:   mirrors, Keychain: kc, Log: log,
	})
}

// imageRoots adapts vmroot's pools to the pool manager's Roots. Until a
// pool boots an image (at start or after a reload) no image store is open
// and it prepares nothing.
type imageRoots struct {
	cfg *config.Config // the running configuration: images.*, state_dir
	log *slog.Logger

	mu      sync.Mutex
	pools   *vmroot.Pools // nil until a pool boots an image
	refresh func(*vmroot.Pools)
}

// openImageRoots sets up the image pools' roots, pulling nothing yet (see
// start). The image store is opened only when a pool boots an image.
func openImageRoots(cfg *config.Config, log *slog.Logger) (*imageRoots, error) {
	r := &imageRoots{cfg: cfg, log: log}
	if !bootsImage(cfg.Pools) {
		return r, nil
	}
	ps, err := r.open(cfg.Pools)
	if err != nil {
		return nil, err
	}
	r.pools = ps
	return r, nil
}

// bootsImage reports whether a pool boots an image.
func bootsImage(pools []config.Pool) bool {
	for _, p := range pools {
		if p.VM.Image != "" {
			return true
		}
	}
	return false
}

// open opens the image store and its disks with the running
// configuration's images settings, for pools.
func (r *imageRoots) open(pools []config.Pool) (*vmroot.Pools, error) {
	store, err := OpenImageStore(r.cfg, r.log)
	if err != nil {
		return nil, err
	}
	disks, err := vmroot.NewDisks(filepath.Join(r.cfg.StateDir, "disks"))
	if err != nil {
		return nil, err
	}
	return vmroot.New(store, disks, pools, r.log)
}

// current is the image pools' roots, nil before a pool boots an image.
func (r *imageRoots) current() *vmroot.Pools {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.pools
}

// start pulls the image pools' images and refreshes the Always ones every
// refresh until ctx ends (also those a reload adds). A pull may evict
// unleased images past images.max_bytes: start after adopting the VMs a
// previous run left, so their images are leased again by then.
func (r *imageRoots) start(ctx context.Context, refresh time.Duration) error {
	r.mu.Lock()
	ps := r.pools
	r.refresh = func(ps *vmroot.Pools) { go ps.Refresh(ctx, refresh) }
	r.mu.Unlock()
	if ps == nil {
		return nil
	}
	if err := ps.Load(ctx); err != nil {
		return err
	}
	r.refresh(ps)
	return nil
}

// Reload implements pool.Roots: the first image pool a reload brings
// opens the image store (with the images settings the daemon started
// with), then vmroot pulls what is new or changed.
func (r *imageRoots) Reload(ctx context.Context, pools []config.Pool) error {
	ps := r.current()
	if ps == nil {
		if !bootsImage(pools) {
			return nil
		}
		opened, err := r.open(nil)
		if err != nil {
			return err
		}
		ps = opened
	}
	if err := ps.Reload(ctx, pools); err != nil {
		return err
	}
	r.mu.Lock()
	first := r.pools == nil
	r.pools = ps
	refresh := r.refresh
	r.mu.Unlock()
	if first && refresh != nil {
		refresh(ps)
	}
	return nil
}

// PrepareVM implements pool.Roots.
func (r *imageRoots) PrepareVM(ctx context.Context, poolName, dir string) (pool.VMRoot, bool, error) {
	ps := r.current()
	if ps == nil {
		return nil, false, nil
	}
	vm, ok, err := ps.PrepareVM(ctx, poolName, dir)
	if vm == nil {
		return nil, ok, err // not a nil *vmroot.VM in a non-nil VMRoot
	}
	return vm, ok, err
}

// AdoptVM implements pool.Roots. Without image pools no store is open, so
// nothing can be leased.
func (r *imageRoots) AdoptVM(ctx context.Context, poolName, dir, digest string) (pool.VMRoot, error) {
	ps := r.current()
	if ps == nil {
		return nil, fmt.Errorf("image %s: no pool boots an image: the image store is not open", digest)
	}
	vm, err := ps.AdoptVM(ctx, poolName, dir, digest)
	if err != nil {
		return nil, err // not a nil *vmroot.VM in a non-nil VMRoot
	}
	return vm, nil
}

// Close releases the pools' images.
func (r *imageRoots) Close() {
	if ps := r.current(); ps != nil {
		ps.Close()
	}
}
