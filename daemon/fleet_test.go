package daemon

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/config"
	"github.com/nixos-fireactions/nixos-fireactions/fleet"
	"github.com/nixos-fireactions/nixos-fireactions/fleet/fleettest"
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

// A fleet without authentication (insecure_no_auth) is warned about at
// start; one with a token file (the control) is not.
func TestJoinFleetWarnsWithoutAuth(t *testing.T) {
	for _, tc := range []struct {
		name string
		fl   config.Fleet
		warn bool
	}{
		{"insecure_no_auth", config.Fleet{InsecureNoAuth: true}, true},
		{"token_file", config.Fleet{TokenFile: "/run/credentials/x/fleet-token"}, false},
	} {
		var buf bytes.Buffer
		log := slog.New(slog.NewTextHandler(&buf, nil))
		cfg := config.Defaults()
		cfg.HostID = "h"
		fl := tc.fl
		fl.URLs, fl.ClaimTTL, fl.OnUnreachable = []string{"nats://127.0.0.1:1"}, 5*time.Second, "local"
		cfg.Fleet = &fl
		joinFleet(t.Context(), &cfg, nil, log)
		if got := strings.Contains(buf.String(), "without authentication"); got != tc.warn {
			t.Errorf("%s: warned %v, want %v:\n%s", tc.name, got, tc.warn, buf.String())
		}
	}
}

// The status page's fleet rows carry each host's published loads.
func TestStatusFleetShowsPublishedLoads(t *testing.T) {
	url := fleettest.RunNATS(t)
	f, err := fleet.Join(t.Context(), fleet.Options{URLs: []string{url}, TokenFile: fleettest.TokenFile(t), HostID: "h", ClaimTTL: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close(context.Background())
	f.Publish("small", 3, 1)
	view := statusFleet(f)
	deadline := time.Now().Add(5 * time.Second)
	for {
		hosts, err := view.FleetHosts(t.Context())
		if err == nil && len(hosts) == 1 && hosts[0].Pools == "small free 3 idle 1" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("fleet rows %+v, %v; want host h with \"small free 3 idle 1\"", hosts, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
