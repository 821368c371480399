package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
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
//
// The host counts the restore as good on the agent's acknowledgement,
// and a restore it counted is never booted cold: the agent acknowledges
// only once the identity is parsed, checked and applied, and refuses one
// it could not apply (Run then ends, the VM powers off, the host boots
// the VM cold).
func (a *Agent) awaitIdentity(ctx context.Context, tpl agentproto.Config) (agentproto.Config, error) {
	a.loadModules(tpl.Modules)
	// The job's cgroups are no VM's own either: made here, once, a
	// restore does not pay for them (a cgroup2 mount and a controller's
	// state for each cgroup: tens of milliseconds under emulation).
	if _, err := a.makeCgroups(); err != nil {
		a.logf("template: the job's cgroups are left to each VM: %v", err)
	}
	a.logf("template: waiting for identity on %s", agentproto.IdentityPort)
	line, answer, err := a.Sys.AwaitIdentity(ctx)
	if err != nil {
		return agentproto.Config{}, fmt.Errorf("template: %w", err)
	}
	cfg, err := a.applyIdentity(line, tpl)
	// One copy fewer of the runner's credential: the decoded config
	// holds its own until the runner's files are written.
	clear(line)
	if aerr := answer(err == nil); aerr != nil {
		if err == nil {
			// Unacknowledged, the host kills the restore.
			return agentproto.Config{}, fmt.Errorf("identity of %s applied: %w", cfg.VMID, aerr)
		}
		a.logf("identity refused: %v", aerr)
	}
	if err != nil {
		return agentproto.Config{}, err
	}
	a.logf("identity of %s read: RNG reseeded, clock and MAC set, acknowledged", cfg.VMID)
	return cfg, nil
}

// applyIdentity parses the identity line, reseeds the RNG, sets the
// clock, checks the VM's config, loads the modules the template did not
// and sets the MAC, and returns the VM's config.
func (a *Agent) applyIdentity(line []byte, tpl agentproto.Config) (agentproto.Config, error) {
	var id agentproto.Identity
	if err := json.Unmarshal(line, &id); err != nil {
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
	// The template's MAC is every restore's: one the identity does not
	// replace would be shared with its siblings.
	if hw, err := net.ParseMAC(id.MAC); err != nil || len(hw) != 6 {
		return agentproto.Config{}, fmt.Errorf("identity: MAC %q is no Ethernet address", id.MAC)
	}
	if err := a.Sys.SetMAC(ifaceName(cfg.Network), id.MAC); err != nil {
		return agentproto.Config{}, fmt.Errorf("identity: %w", err)
	}
	return cfg, nil
}
