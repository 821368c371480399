package cli

import (
	"context"
	"log/slog"
	"path/filepath"

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
		Mirrors: mirrors, Keychain: kc, Log: log,
	})
}

// imageRoots adapts vmroot's pools to the pool manager's Roots. A nil
// *imageRoots (no pool boots an image) prepares nothing.
type imageRoots struct{ pools *vmroot.Pools }

// startImageRoots pulls the image pools' images and starts refreshing the
// Always ones until ctx ends; nil when no pool boots an image.
func startImageRoots(ctx context.Context, cfg *config.Config, log *slog.Logger) (*imageRoots, error) {
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
	ps, err := vmroot.New(ctx, store, disks, cfg.Pools, log)
	if err != nil {
		return nil, err
	}
	go ps.Refresh(ctx, cfg.Images.Refresh)
	return &imageRoots{pools: ps}, nil
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

// Close releases the pools' images.
func (r *imageRoots) Close() {
	if r != nil {
		r.pools.Close()
	}
}
