// Package agent is the guest side of a fireactions microVM: the /init that
// boots the VM's userland, runs the forge's runner for exactly one job as an
// unprivileged user, reports the VM's progress to the host, and powers the VM
// off when the runner ends.
//
// It exists as a package, separate from cmd/fireactions-agent, so the boot
// sequence can be exercised on the host: every effect on the kernel goes
// through System, and every path the agent touches is relative to Agent.Root.
// It must stay small and static, so it imports only the standard library,
// x/sys/unix, netlink and agentproto.
package agent

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
)

// DefaultFlushTimeout bounds how long the agent waits for queued reports to
// reach the host before it powers the VM off.
const DefaultFlushTimeout = 5 * time.Second

// Agent runs one guest's life. The zero value is not usable: set Sys and
// Console (New does, for a real guest).
type Agent struct {
	// Root is the directory the guest's filesystem is read and written
	// under: "/" in a guest, a temporary directory in tests. The runner's
	// command itself is executed as given, not relative to Root.
	Root string
	// Sys performs the agent's effects on the kernel.
	Sys System
	// Console receives the agent's log and the runner's output: the serial
	// console in a guest.
	Console io.Writer
	// FlushTimeout bounds the wait for queued reports before Run returns;
	// zero means DefaultFlushTimeout.
	FlushTimeout time.Duration
	// DiskWait bounds the wait for an image root's disks to appear; zero
	// means DefaultDiskWait.
	DiskWait time.Duration

	con *console
	// image names the image root once switched to, for errors; empty
	// on the initramfs root.
	image string
}

// New returns the agent for a real guest: root "/", the Linux system calls,
// and the console on w (PID 1's stdout is the serial console).
func New(w io.Writer) *Agent {
	return &Agent{Root: "/", Sys: Linux(), Console: w}
}

// Boot runs the guest's whole life and then powers it off. In a guest it
// never returns; it returns only when Sys.PowerOff does (in tests).
func (a *Agent) Boot(ctx context.Context) {
	if err := a.Run(ctx); err != nil {
		a.logf("fatal: %v", err)
	}
	a.logf("powering off")
	a.Sys.PowerOff()
}

// Run boots the guest and runs the runner to its end: mounts, config, kernel
// modules, hostname, network, the image root when there is one, the
// name files in /etc, the runner's user and files, then the runner.
// It reports each event to the host, and before returning waits (at most
// FlushTimeout) for the reports to be sent. Cancelling ctx kills the
// runner's session. A runner that exits, whatever
// its exit code, is a success; the error is a step that failed, already
// reported to the host as EventFailed when the host could be reached.
func (a *Agent) Run(ctx context.Context) error {
	a.con = newConsole(a.Console, a.Sys.Uptime)
	started := a.Sys.Uptime() // "booted" is when /init began, reported once it can be
	a.logf("fireactions agent starting")
	if err := a.mountAll(); err != nil {
		return err
	}
	cfg, err := readConfig(a.Root)
	if err != nil {
		return err
	}
	if cfg.Template {
		// A template's failure reaches no host (it has no address):
		// the console and the host's wait for its save say it.
		if cfg, err = a.awaitIdentity(ctx, cfg); err != nil {
			return err
		}
		started = a.Sys.Uptime()
	}
	q := newReportQueue(NewReporter(cfg.Report), cfg.VMID, a.Sys.Uptime, a.logf)
	q.add(agentproto.Report{Event: agentproto.EventBooted, Uptime: started})
	err = a.run(ctx, cfg, q)
	if err != nil {
		q.add(agentproto.Report{Event: agentproto.EventFailed, Message: err.Error()})
	}
	timeout := a.FlushTimeout
	if timeout == 0 {
		timeout = DefaultFlushTimeout
	}
	q.close(timeout)
	return err
}

// run is Run after the config is known: everything whose failure can be
// reported to the host (once the network is up).
func (a *Agent) run(ctx context.Context, cfg agentproto.Config, q *reportQueue) error {
	a.loadModules(cfg.Modules)
	if cfg.Hostname != "" {
		if err := a.Sys.SetHostname(cfg.Hostname); err != nil {
			return fmt.Errorf("setting hostname %q: %w", cfg.Hostname, err)
		}
	}
	start := a.Sys.Uptime()
	if err := a.Sys.ConfigureNetwork(ctx, cfg.Network); err != nil {
		return fmt.Errorf("configuring network: %w", err)
	}
	a.logf("network %s up with %s in %.3fs", ifaceName(cfg.Network), cfg.Network.Address, (a.Sys.Uptime() - start).Seconds())
	q.add(agentproto.Report{Event: agentproto.EventNetworkUp})
	q.start(ctx)
	// The root switches once the network is up, so that a broken image is
	// reported to the host, not only printed on the console.
	if cfg.Root != nil {
		if err := a.switchRoot(ctx, *cfg.Root, cfg.Registry != nil && cfg.Registry.Docker); err != nil {
			return err
		}
	}
	if err := a.writeNameFiles(cfg.Hostname, cfg.Network.DNS); err != nil {
		return err
	}
	if err := a.ensureUser(cfg.Runner); err != nil {
		return err
	}
	if err := a.writeRunnerFiles(cfg.Runner, a.runsDocker(cfg.Registry)); err != nil {
		return err
	}
	if err := a.checkRunnerVersion(ctx, cfg.Runner); err != nil {
		return err
	}
	return a.runAfterRegistry(ctx, &cfg, q) // mirrors, CA, proxy and dockerd first
}

// logf writes one agent line on the console.
func (a *Agent) logf(format string, args ...any) {
	if a.con == nil {
		a.con = newConsole(a.Console, a.Sys.Uptime)
	}
	a.con.logf(format, args...)
}
