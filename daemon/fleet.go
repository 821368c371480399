package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/api"
	"github.com/nixos-fireactions/nixos-fireactions/config"
	"github.com/nixos-fireactions/nixos-fireactions/fleet"
	"github.com/nixos-fireactions/nixos-fireactions/pool"
)

// fleetJoinTimeout bounds joining at start: connecting, the buckets,
// and waiting for this host_id's previous presence to lapse.
const fleetJoinTimeout = time.Minute

// fleetOptions are the fleet package's options of cfg's fleet section.
func fleetOptions(cfg *config.Config, obs fleet.Observer, log *slog.Logger) fleet.Options {
	return fleet.Options{URLs: cfg.Fleet.URLs, CredsFile: cfg.Fleet.CredsFile, TokenFile: cfg.Fleet.TokenFile, HostID: cfg.HostID,
		ClaimTTL: cfg.Fleet.ClaimTTL, Replicas: cfg.Fleet.Replicas, Log: log, Observer: obs}
}

// joinFleet joins the fleet cfg names. No fleet section: nil, nil. NATS
// unreachable with on_unreachable local: a warning and nil (this host
// serves alone until restarted); otherwise the error.
func joinFleet(ctx context.Context, cfg *config.Config, obs fleet.Observer, log *slog.Logger) (*fleet.Fleet, error) {
	if cfg.Fleet == nil {
		return nil, nil
	}
	if cfg.Fleet.InsecureNoAuth && cfg.Fleet.CredsFile == "" && cfg.Fleet.TokenFile == "" {
		log.Warn("fleet: connecting to NATS without authentication (fleet.insecure_no_auth): any CI job that reaches NATS can squat or delete the fleet's claims; set fleet.token_file or fleet.credentials_file")
	}
	jctx, cancel := context.WithTimeout(ctx, fleetJoinTimeout)
	defer cancel()
	f, err := fleet.Join(jctx, fleetOptions(cfg, obs, log))
	if err == nil {
		log.Info("joined the fleet", "host_id", cfg.HostID, "claim_ttl", cfg.Fleet.ClaimTTL, "replicas", cfg.Fleet.Replicas)
		return f, nil
	}
	if cfg.Fleet.OnUnreachable == "local" {
		log.Warn("fleet unreachable: serving alone (on_unreachable: local) until restarted", "err", err)
		return nil, nil
	}
	return nil, fmt.Errorf("join the fleet (fleet.on_unreachable: fail): %w", err)
}

// claimer is f as the pool manager's Claimer: nil when there is no fleet
// (not a nil *fleet.Fleet in an interface).
func claimer(f *fleet.Fleet) pool.Claimer {
	if f == nil {
		return nil
	}
	return f
}

// leaveFleet deletes this host's claims and presence, after the drain.
func leaveFleet(f *fleet.Fleet) {
	if f == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	f.Close(ctx)
}

// FleetStatus reads the fleet cfg names, without joining it.
func FleetStatus(ctx context.Context, cfg *config.Config) (fleet.Status, error) {
	if cfg.Fleet == nil {
		return fleet.Status{}, fmt.Errorf("the configuration has no fleet section")
	}
	return fleet.ReadStatus(ctx, fleetOptions(cfg, nil, nil))
}

// fleetView is f as the status page's api.FleetView.
type fleetView struct{ f *fleet.Fleet }

func (v fleetView) FleetHosts(ctx context.Context) ([]api.FleetHost, error) {
	hosts, err := v.f.Hosts(ctx)
	out := make([]api.FleetHost, 0, len(hosts))
	for _, h := range hosts {
		out = append(out, api.FleetHost{HostID: h.HostID, Since: h.Since, LastSeen: h.LastSeen, Claims: h.Claims, Pools: fleet.LoadsText(h.Pools)})
	}
	return out, err
}

func (v fleetView) Reachable() bool { return v.f.Reachable() }

// statusFleet is f for the status page: nil when there is no fleet.
func statusFleet(f *fleet.Fleet) api.FleetView {
	if f == nil {
		return nil
	}
	return fleetView{f}
}
