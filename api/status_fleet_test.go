package api

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"
)

// fakeFleet is a FleetView with fixed hosts.
type fakeFleet struct {
	hosts     []FleetHost
	err       error
	reachable bool
	block     bool // FleetHosts waits for its context
}

func (f fakeFleet) FleetHosts(ctx context.Context) ([]FleetHost, error) {
	if f.block {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return f.hosts, f.err
}

func (f fakeFleet) Reachable() bool { return f.reachable }

func fleetPage(t *testing.T, f FleetView) string {
	t.Helper()
	fixClock(t)
	b := newFakeBackend(testNow.Add(-90 * time.Second))
	h := NewHandler(Options{Backend: b, Tokens: []string{"first-token"}, Insights: fakeInsights{}, Fleet: f}, true)
	w := do(h, "GET", "/status", "", map[string]string{"Authorization": "Bearer first-token"})
	if w.Code != http.StatusOK {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	return w.Body.String()
}

// A host in a fleet shows the fleet's hosts (joined, last seen, claims)
// and whether it is in its fleet; a host in none has no fleet section.
func TestStatusPageShowsTheFleetsHosts(t *testing.T) {
	joined := time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)
	page := fleetPage(t, fakeFleet{reachable: true, hosts: []FleetHost{
		{HostID: "host-a", Since: joined, LastSeen: 3 * time.Second, Claims: 2, Pools: "small free 4 idle 1"},
		{HostID: `<b>host-b</b>`, Since: joined, LastSeen: 1500 * time.Millisecond},
	}})
	for _, want := range []string{
		`<h2>Fleet hosts</h2>`,
		`This host is in its fleet.`,
		`<tr data-host="host-a"><td>host-a</td><td>2026-12-05T10:00:00Z</td><td>3s ago</td><td class="n">2</td><td>small free 4 idle 1</td></tr>`,
		`<td>&lt;b&gt;host-b&lt;/b&gt;</td>`,
	} {
		if !strings.Contains(page, want) {
			t.Errorf("the page lacks %s:\n%s", want, page)
		}
	}
	if strings.Contains(page, "<b>host-b</b>") {
		t.Error("a host id reaches the page unescaped")
	}
	if none := fleetPage(t, nil); strings.Contains(none, "Fleet hosts") {
		t.Error("a host in no fleet shows a fleet section")
	}
}

// A host cut off from its fleet says so; a fleet that cannot be read, or
// does not answer within fleetReadTimeout, shows the error instead of
// holding the page.
func TestStatusPageSaysWhenTheFleetIsUnreachable(t *testing.T) {
	page := fleetPage(t, fakeFleet{err: errors.New("nats: no servers available")})
	for _, want := range []string{"cut off from its fleet", "nats: no servers available", `no hosts`} {
		if !strings.Contains(page, want) {
			t.Errorf("the page lacks %q:\n%s", want, page)
		}
	}
	start := time.Now()
	page = fleetPage(t, fakeFleet{block: true, reachable: true})
	if took := time.Since(start); took > fleetReadTimeout+2*time.Second {
		t.Errorf("a fleet that does not answer held the page %v", took)
	}
	if !strings.Contains(page, "deadline exceeded") {
		t.Errorf("the page does not say the fleet read timed out:\n%s", page)
	}
}
