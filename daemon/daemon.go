// Package daemon is the orchestrator: the long-running side of
// fireactions that `fireactions serve` starts. It wires the host together
// from a loaded configuration (the bridge and its nftables rules, the VM
// state store, the per-pool boot archives, the image roots, the VMM
// driver and one forge.Driver per configured forge, picked from the
// driver catalog, each pool's scope of its forge's driver, the metrics,
// the pool manager and its listeners: agent, metrics, API and webhooks,
// where /webhooks/<forge name> goes to that forge's driver once per
// delivery) and runs it until a signal: SIGTERM or SIGINT drains, SIGHUP
// reloads the pools (their scopes from the running drivers).
//
// It exists apart from cli as tailscaled does from tailscale: cli is the
// command line (commands, flags, the API client) and calls Run; what the
// daemon is made of is decided here, the only package that may import a
// VMM or forge driver (cli and cmd/fireactions reach them through it).
// It never imports cli (internal/deptest holds both to that).
package daemon

import (
	"context"
	"io"
	"log/slog"
	"os/signal"
	"strings"
	"syscall"

	"github.com/nixos-fireactions/nixos-fireactions/config"
)

// Options are what the daemon takes besides its configuration.
type Options struct {
	// ConfigPath is the file the configuration was loaded from, read
	// again on SIGHUP.
	ConfigPath string
	// Version is this build's version, in the forge clients' user agent.
	Version string
	// Logs is where the daemon logs, in the configured format and level.
	Logs io.Writer
}

// Run runs the pools cfg describes until ctx ends or SIGTERM or SIGINT
// comes, then drains them; SIGHUP reloads the pools from opts.ConfigPath.
// It also makes its logger slog's default, for the forge drivers' own logs.
func Run(ctx context.Context, cfg *config.Config, opts Options) error {
	log := newLogger(cfg.Log, opts.Logs)
	slog.SetDefault(log) // for the forge drivers' own logs
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	return serve(ctx, opts, cfg, log)
}

// newLogger builds the orchestrator's logger from the config.
func newLogger(c config.Log, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(strings.ToUpper(c.Level)))
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
