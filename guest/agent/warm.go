package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
)

// awaitIdentity is a template's life until it becomes one VM (see
// agentproto.Config.Template): it brings up what is identity-free (the
// kernel file systems are mounted already; the modules, the job's
// cgroups), says it waits,
// and is saved there by the host. Each restore reads its Identity,
// reseeds the kernel's RNG, sets the clock and MAC, and returns the VM's
// own config, which Run then follows exactly as a cold boot: hostname,
// address, the writable disk and root, the runner's credential and
// files, registry settings, Docker, the runner. Nothing the template
// holds refers to a VM's disk, address or credential.
func (a *Agent) awaitIdentity(ctx context.Context, tpl agentproto.Config) (agentproto.Config, error) {
	a.loadModules(tpl.Modules)
	// The job's cgroups are no VM's own either: made here, once, a
	// restore does not pay for them (a cgroup2 mount and a controller's
	// state for each cgroup: tens of milliseconds under emulation).
	if _, err := a.makeCgroups(); err != nil {
		a.logf("template: the job's cgroups are left to each VM: %v", err)
	}
	a.logf("template: waiting for identity on %s", agentproto.IdentityPort)
	line, err := a.Sys.AwaitIdentity(ctx)
	if err != nil {
		return agentproto.Config{}, fmt.Errorf("template: %w", err)
	}
	var id agentproto.Identity
	err = json.Unmarshal(line, &id)
	clear(line) // it carries the runner's credential
	if err != nil {
		return agentproto.Config{}, fmt.Errorf("template: parsing the identity: %w", err)
	}
	// The reseed comes first: nothing may read the template's random
	// state before it.
	if err := a.Sys.Reseed(id.Seed); err != nil {
		return agentproto.Config{}, fmt.Errorf("identity: %w", err)
	}
	if err := a.Sys.SetClock(id.Now); err != nil {
		return agentproto.Config{}, fmt.Errorf("identity: %w", err)
	}
	cfg := id.Config
	if cfg.Template {
		return agentproto.Config{}, errors.New("identity: its config is a template's")
	}
	if err := checkConfig(&cfg); err != nil {
		return agentproto.Config{}, fmt.Errorf("identity: config: %w", err)
	}
	// The template loaded its modules; the VM's config names the
	// pool's, the same or more: the others load now, before the MAC is
	// set (the interface's driver may be among them), not again in run.
	a.loadModules(slices.DeleteFunc(cfg.Modules, func(m string) bool { return slices.Contains(tpl.Modules, m) }))
	cfg.Modules = nil
	if id.MAC != "" {
		if err := a.Sys.SetMAC(ifaceName(cfg.Network), id.MAC); err != nil {
			return agentproto.Config{}, fmt.Errorf("identity: %w", err)
		}
	}
	a.logf("identity of %s read: RNG reseeded, clock and MAC set", cfg.VMID)
	return cfg, nil
}
