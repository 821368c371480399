package metrics

import (
	"context"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/fleet"
	"github.com/nixos-fireactions/nixos-fireactions/fleet/fleettest"
)

// Two hosts contest one job: the winner's metrics count it won, the
// loser's lost, and both say they are in the fleet.
func TestFleetClaimsAreCounted(t *testing.T) {
	url := fleettest.RunNATS(t)
	ctx := t.Context()
	var ms [2]*Metrics
	for i, id := range []string{"a", "b"} {
		ms[i] = New(t.TempDir())
		f, err := fleet.Join(ctx, fleet.Options{URLs: []string{url}, TokenFile: fleettest.TokenFile(t), HostID: id, ClaimTTL: 5 * time.Second, Observer: ms[i]})
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close(context.Background())
		if ok, err := f.Claim(ctx, "gitea|org\x001"); ok != (i == 0) || err != nil {
			t.Fatalf("host %s claims: %v %v", id, ok, err)
		}
	}
	for i, want := range [][]string{
		{`fireactions_fleet_claims_total{result="won"} 1`, `fireactions_fleet_claims_total{result="lost"} 0`, "fireactions_fleet_reachable 1"},
		{`fireactions_fleet_claims_total{result="won"} 0`, `fireactions_fleet_claims_total{result="lost"} 1`, "fireactions_fleet_reachable 1"},
	} {
		rec := httptest.NewRecorder()
		ms[i].Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		body, _ := io.ReadAll(rec.Body)
		for _, w := range want {
			if !strings.Contains(string(body), w) {
				t.Errorf("host %d: /metrics lacks %q", i, w)
			}
		}
	}
}
