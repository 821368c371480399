package cli

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/config"
	"github.com/nixos-fireactions/nixos-fireactions/imagestore"
	"github.com/nixos-fireactions/nixos-fireactions/pool"
	"github.com/nixos-fireactions/nixos-fireactions/vmroot"
)

// openImageStore opens the image store the configuration describes, with
// its registry credentials and mirrors.
func openImageStore(cfg *config.Config, log *slog.Logger) (*imagestore.Store, error) {
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

// imageRoots adapts vmroot's pools to the pool manager's Roots. A nil
// *imageRoots (no pool boots an image) prepares nothing.
type imageRoots struct{ pools *vmroot.Pools }

// openImageRoots opens the image store and sets up the image pools'
// roots, pulling nothing yet (see start); nil when no pool boots an
// image.
func openImageRoots(cfg *config.Config, log *slog.Logger) (*imageRoots, error) {
	var images bool
	for _, p := range cfg.Pools {
		images = images || p.VM.Image != ""
	}
	if !images {
		return nil, nil
	}
	store, err := openImageStore(cfg, log)
	if err != nil {
		return nil, err
	}
	disks, err := vmroot.NewDisks(filepath.Join(cfg.StateDir, "disks"))
	if err != nil {
		return nil, err
	}
	ps, err := vmroot.New(store, disks, cfg.Pools, log)
	if err != nil {
		return nil, err
	}
	return &imageRoots{pools: ps}, nil
}

// start pulls the image pools' images and refreshes the Always ones every
// refresh until ctx ends. A pull may evict unleased images past
// images.max_bytes: start after adopting the VMs a previous run left, so
// their images are leased again by then.
func (r *imageRoots) start(ctx context.Context, refresh time.Duration) error {
	if r == nil {
		return nil
	}
	if err := r.pools.Load(ctx); err != nil {
		return err
	}
	go r.pools.Refresh(ctx, refresh)
	return nil
}

// PrepareVM implements pool.Roots.
func (r *imageRoots) PrepareVM(ctx context.Context, poolName, dir string) (pool.VMRoot, bool, error) {
	if r == nil {
		return nil, false, nil
	}
	vm, ok, err := r.pools.PrepareVM(ctx, poolName, dir)
	if vm == nil {
		return nil, ok, err
	}
	return vm, ok, err
}

// AdoptVM implements pool.Roots. Without image pools no store is open, so
// nothing can be leased.
func (r *imageRoots) AdoptVM(ctx context.Context, poolName, dir, digest string) (pool.VMRoot, error) {
	if r == nil {
		return nil, fmt.Errorf("image %s: no pool boots an image: the image store is not open", digest)
	}
	vm, err := r.pools.AdoptVM(ctx, poolName, dir, digest)
	if err != nil {
		return nil, err // not a nil *vmroot.VM in a non-nil VMRoot
	}
	return vm, nil
}

// Close releases the pools' images.
func (r *imageRoots) Close() {
	if r != nil {
		r.pools.Close()
	}
}
