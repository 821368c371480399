package daemon

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/config"
)

// NATS unreachable at start: a clear error naming the URL and the
// setting, or, with on_unreachable local, no fleet and no error; no
// fleet section: no fleet.
func TestJoinFleetWhenNATSIsUnreachable(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	cfg := config.Defaults()
	cfg.HostID = "h"
	if f, err := joinFleet(t.Context(), &cfg, nil, log); f != nil || err != nil {
		t.Fatalf("no fleet section: %v, %v", f, err)
	}
	if c := claimer(nil); c != nil {
		t.Fatalf("no fleet: claimer %#v, want a nil interface", c)
	}
	cfg.Fleet = &config.Fleet{URLs: []string{"nats://127.0.0.1:1"}, ClaimTTL: 5 * time.Second, OnUnreachable: "fail"}
	_, err := joinFleet(t.Context(), &cfg, nil, log)
	if err == nil || !strings.Contains(err.Error(), "nats://127.0.0.1:1") || !strings.Contains(err.Error(), "on_unreachable: fail") {
		t.Fatalf("unreachable, fail: %v", err)
	}
	cfg.Fleet.OnUnreachable = "local"
	if f, err := joinFleet(t.Context(), &cfg, nil, log); f != nil || err != nil {
		t.Fatalf("unreachable, local: %v, %v; want to serve alone", f, err)
	}
}
