package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"reflect"

	"github.com/nixos-fireactions/nixos-fireactions/catalog"
	"github.com/nixos-fireactions/nixos-fireactions/config"
	"github.com/nixos-fireactions/nixos-fireactions/forge"
	"github.com/nixos-fireactions/nixos-fireactions/forge/gitea"
	"github.com/nixos-fireactions/nixos-fireactions/vmm"
	"github.com/nixos-fireactions/nixos-fireactions/vmm/qemu"
)

// forgeDriver is one configured forge as the daemon holds it: its
// forge.Driver (connection, credentials, rate budget, webhook endpoint),
// and how a pool naming it gets its scope from the pool's configuration.
type forgeDriver interface {
	forge.Driver
	scope(p config.Pool, s config.Scope, hostID string) (forge.Forge, error)
}

// forgeFactory builds the driver of one configured forge.
type forgeFactory func(fc config.Forge) (forgeDriver, error)

// forgeDrivers are the forge drivers in this build, one line each, keyed
// by the catalog's names; version goes in the clients' user agent.
func forgeDrivers(version string) map[string]forgeFactory {
	return map[string]forgeFactory{
		catalog.Gitea:  giteaDriver(version),
		catalog.GitHub: githubDriver,
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

// giteaDriver returns the factory of gitea drivers, whose clients say
// they are this version.
func giteaDriver(version string) forgeFactory {
	return func(fc config.Forge) (forgeDriver, error) {
		d, err := gitea.NewDriver(fc.Name, gitea.Options{
			URL: fc.URL, GuestURL: fc.GuestURL, Token: fc.Token, CAFile: fc.CAFile,
			Version: "fireactions-" + version, WebhookSecret: fc.WebhookSecret, Log: slog.Default(),
			Flavor: fc.Flavor,
		})
		if err != nil {
			return nil, err
		}
		return giteaForge{d}, nil
	}
}

// giteaForge gives a gitea pool its scope.
type giteaForge struct{ *gitea.Driver }

func (g giteaForge) scope(p config.Pool, s config.Scope, _ string) (forge.Forge, error) {
	return g.Scope(gitea.Scope{Kind: s.Kind, Org: s.Org, Owner: s.Owner, Repo: s.Repo, Labels: p.Labels})
}

func qemuDriver(ctx context.Context, cfg *config.Config, log *slog.Logger) (vmm.Hypervisor, error) {
	accel := qemu.Accel(cfg.VMM.QEMU.Accel)
	if accel == "auto" {
		var why string
		accel, why = qemu.DetectAccel(ctx, cfg.VMM.QEMU.Binary, "/dev/kvm")
		log.Info("qemu acceleration detected", "accel", accel, "kvm", why)
	}
	d := &qemu.Driver{Binary: cfg.VMM.QEMU.Binary, Accel: accel}
	if accel == qemu.AccelTCG {
		// A TCG guest's clock runs at the rate its kernel is told its
		// TSC (the host's) runs at.
		khz, err := qemu.HostTSCkHz()
		if err != nil {
			log.Warn("qemu: the host's TSC rate is unknown; TCG guests' clocks may run fast or slow", "err", err)
		} else {
			d.TSCkHz = khz
			log.Info("qemu: TCG guests are told the host's TSC rate", "tsc_khz", khz)
		}
	}
	return d, nil
}

// forgeSet is the drivers of the configured forges, one per forge entry
// (however many pools name it), by name. They live as long as the
// daemon: a reload asks them for its pools' scopes, and a forge's
// settings change with a restart only.
type forgeSet struct {
	version string // in the clients' user agent
	drivers map[string]forgeDriver
	built   map[string]config.Forge // the settings each driver was built from
}

// quiescer is a driver that holds listeners of its own (GitHub scale-set
// sessions) to wind down once the pools stopped asking for demand.
type quiescer interface {
	Quiesce(ctx context.Context) error
}

// quiesce waits for every driver's listeners to wind down, until ctx
// ends.
func (fs *forgeSet) quiesce(ctx context.Context, log *slog.Logger) {
	for name, d := range fs.drivers {
		if q, ok := d.(quiescer); ok {
			if err := q.Quiesce(ctx); err != nil {
				log.Warn("a forge's listeners did not wind down", "forge", name, "err", err)
			}
		}
	}
}

func newForgeSet(version string) *forgeSet {
	return &forgeSet{version: version, drivers: map[string]forgeDriver{}, built: map[string]config.Forge{}}
}

// connectForges builds one driver per configured forge and asks it for
// the scope of each pool naming it; version goes in the clients' user
// agent.
func connectForges(cfg *config.Config, version string) (*forgeSet, map[string]forge.Forge, error) {
	fs := newForgeSet(version)
	scopes, fresh, err := fs.connect(cfg, nil)
	if err != nil {
		return nil, nil, err
	}
	fs.adopt(fresh)
	return fs, scopes, nil
}

// builtDriver is a driver connect built, with the settings it was built
// from.
type builtDriver struct {
	d  forgeDriver
	fc config.Forge
}

// connect returns one scope per pool of cfg, by pool name, from its
// forge's driver, and the drivers it built for the forges of cfg the set
// does not hold yet. Those are not in the set: adopt adds them once the
// pools that use them are taken, so a refused reload leaves no driver
// built from its settings. A forge the set holds whose settings changed
// keeps its running driver (settings change with a restart), and log
// says so by name.
func (fs *forgeSet) connect(cfg *config.Config, log *slog.Logger) (map[string]forge.Forge, map[string]builtDriver, error) {
	factories := forgeDrivers(fs.version)
	byName := map[string]config.Forge{}
	fresh := map[string]builtDriver{}
	for _, fc := range cfg.Forges {
		byName[fc.Name] = fc
		if _, ok := fs.drivers[fc.Name]; ok {
			if was := fs.built[fc.Name]; !reflect.DeepEqual(was, fc) && log != nil {
				log.Warn("a forge's settings changed: restart to apply them; its pools keep the running ones", "forge", fc.Name)
			}
			continue
		}
		newDriver, ok := factories[fc.Type]
		if !ok {
			return nil, nil, fmt.Errorf("forge %q: type %q has no driver in this build", fc.Name, fc.Type)
		}
		d, err := newDriver(fc)
		if err != nil {
			return nil, nil, fmt.Errorf("forge %q: %w", fc.Name, err)
		}
		fresh[fc.Name] = builtDriver{d: d, fc: fc}
	}
	out := map[string]forge.Forge{}
	for _, p := range cfg.Pools {
		fc := byName[p.Forge]
		d, ok := fs.drivers[p.Forge]
		if !ok {
			b, built := fresh[p.Forge]
			if !built {
				return nil, nil, fmt.Errorf("pool %q: forge %q is not configured", p.Name, p.Forge)
			}
			d = b.d
		}
		if d.Kind() != fc.Type {
			return nil, nil, fmt.Errorf("pool %q: forge %q is a %s forge now, %s when the daemon started: restart to change it",
				p.Name, p.Forge, fc.Type, d.Kind())
		}
		scope, err := config.CheckScope(p.Scope, fc.Type)
		if err != nil {
			return nil, nil, fmt.Errorf("pool %q: %w", p.Name, err)
		}
		f, err := d.scope(p, scope, cfg.HostID)
		if err != nil {
			return nil, nil, fmt.Errorf("pool %q: forge %q: %w", p.Name, fc.Name, err)
		}
		out[p.Name] = f
	}
	return out, fresh, nil
}

// adopt adds the drivers connect built to the set.
func (fs *forgeSet) adopt(fresh map[string]builtDriver) {
	for name, b := range fresh {
		fs.drivers[name] = b.d
		fs.built[name] = b.fc
	}
}

// retain tells every driver which of its scopes the pools use (inUse, by
// pool name): the others, asked for by a reload that was refused or
// replaced since, take no more demand.
func (fs *forgeSet) retain(inUse map[string]forge.Forge) {
	scopes := make([]forge.Forge, 0, len(inUse))
	for _, f := range inUse {
		scopes = append(scopes, f)
	}
	for _, d := range fs.drivers {
		d.Retain(scopes)
	}
}

func newHypervisor(ctx context.Context, cfg *config.Config, log *slog.Logger) (vmm.Hypervisor, error) {
	newDriver, ok := vmmDrivers()[cfg.VMM.Driver]
	if !ok {
		return nil, fmt.Errorf("vmm.driver %q has no driver in this build", cfg.VMM.Driver)
	}
	return newDriver(ctx, cfg, log)
}
