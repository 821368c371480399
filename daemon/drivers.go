package daemon

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/nixos-fireactions/nixos-fireactions/catalog"
	"github.com/nixos-fireactions/nixos-fireactions/config"
	"github.com/nixos-fireactions/nixos-fireactions/forge"
	"github.com/nixos-fireactions/nixos-fireactions/forge/gitea"
	"github.com/nixos-fireactions/nixos-fireactions/vmm"
	"github.com/nixos-fireactions/nixos-fireactions/vmm/qemu"
)

// forgeFactory builds the driver for one pool's forge and scope.
type forgeFactory func(fc config.Forge, p config.Pool, s config.Scope) (forge.Forge, error)

// forgeDrivers are the forge drivers in this build, one line each, keyed
// by the catalog's names; version goes in the clients' user agent.
func forgeDrivers(version string) map[string]forgeFactory {
	return map[string]forgeFactory{
		catalog.Gitea:  giteaDriver(version),
		catalog.GitHub: githubDriver(),
		catalog.GitLab: gitlabDriver,
	}
}

// vmmFactory builds the hypervisor driver.
type vmmFactory func(ctx context.Context, cfg *config.Config, log *slog.Logger) (vmm.Hypervisor, error)

// vmmDrivers are the VMM drivers in this build, one line each, keyed by
// the catalog's names.
func vmmDrivers() map[string]vmmFactory {
	return map[string]vmmFactory{
		catalog.QEMU:        qemuDriver,
		catalog.Firecracker: firecrackerDriver,
	}
}

// giteaDriver returns the factory of gitea pools, whose clients say
// they are this version.
func giteaDriver(version string) forgeFactory {
	return func(fc config.Forge, _ config.Pool, s config.Scope) (forge.Forge, error) {
		return gitea.New(gitea.Options{
			URL: fc.URL, GuestURL: fc.GuestURL, Token: fc.Token, CAFile: fc.CAFile,
			Scope:   gitea.Scope{Kind: s.Kind, Org: s.Org, Owner: s.Owner, Repo: s.Repo},
			Version: "fireactions-" + version,
		})
	}
}

func qemuDriver(ctx context.Context, cfg *config.Config, log *slog.Logger) (vmm.Hypervisor, error) {
	accel := qemu.Accel(cfg.VMM.QEMU.Accel)
	if accel == "auto" {
		var why string
		accel, why = qemu.DetectAccel(ctx, "/dev/kvm")
		log.Info("qemu acceleration detected", "accel", accel, "kvm", why)
	}
	return &qemu.Driver{Binary: cfg.VMM.QEMU.Binary, Accel: accel}, nil
}

// connectForges builds one forge driver per pool (a pool's forge and
// scope); version goes in the clients' user agent.
func connectForges(cfg *config.Config, version string) (map[string]forge.Forge, error) {
	byName := map[string]config.Forge{}
	for _, f := range cfg.Forges {
		byName[f.Name] = f
	}
	drivers := forgeDrivers(version)
	out := map[string]forge.Forge{}
	for _, p := range cfg.Pools {
		fc := byName[p.Forge]
		scope, err := config.CheckScope(p.Scope, fc.Type)
		if err != nil {
			return nil, fmt.Errorf("pool %q: %w", p.Name, err)
		}
		newDriver, ok := drivers[fc.Type]
		if !ok {
			return nil, fmt.Errorf("pool %q: forge type %q has no driver in this build", p.Name, fc.Type)
		}
		f, err := newDriver(fc, p, scope)
		if err != nil {
			return nil, fmt.Errorf("pool %q: forge %q: %w", p.Name, fc.Name, err)
		}
		out[p.Name] = f
	}
	return out, nil
}

func newHypervisor(ctx context.Context, cfg *config.Config, log *slog.Logger) (vmm.Hypervisor, error) {
	newDriver, ok := vmmDrivers()[cfg.VMM.Driver]
	if !ok {
		return nil, fmt.Errorf("vmm.driver %q has no driver in this build", cfg.VMM.Driver)
	}
	return newDriver(ctx, cfg, log)
}
