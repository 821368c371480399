package daemon

import (
	"errors"
	"net/http"
	"sort"
	"sync"

	"github.com/nixos-fireactions/nixos-fireactions/forge"
)

// webhookRoutes hands each forge's webhook deliveries to every current
// pool driver of that forge (GitLab keeps one driver per pool; GitHub's
// pools share one connection, which drops the repeats by delivery id).
// A reload swaps the drivers without touching the API server.
type webhookRoutes struct {
	mu     sync.RWMutex
	byName map[string][]forge.WebhookReceiver
}

// set replaces the routes with the receivers among forges (by pool name),
// grouped by forge name through forgeOf.
func (r *webhookRoutes) set(forges map[string]forge.Forge, forgeOf map[string]string) {
	byName := map[string][]forge.WebhookReceiver{}
	pools := make([]string, 0, len(forges))
	for pool := range forges {
		pools = append(pools, pool)
	}
	sort.Strings(pools) // the first pool by name answers the forge
	for _, pool := range pools {
		f := forges[pool]
		if w, ok := f.(forge.WebhookReceiver); ok {
			byName[forgeOf[pool]] = append(byName[forgeOf[pool]], w)
		}
	}
	r.mu.Lock()
	r.byName = byName
	r.mu.Unlock()
}

// receivers is the API's view: one receiver per forge name that fans out.
func (r *webhookRoutes) receivers(names []string) map[string]forge.WebhookReceiver {
	out := map[string]forge.WebhookReceiver{}
	for _, n := range names {
		out[n] = fanout{routes: r, name: n}
	}
	return out
}

type fanout struct {
	routes *webhookRoutes
	name   string
}

// maxWebhookBody bounds a delivery read here when the API has not read it
// already (the API reads it once, to limits.webhook_max_body).
const maxWebhookBody = 25 << 20

func (f fanout) ServeWebhook(w http.ResponseWriter, r *http.Request, kick func()) {
	f.routes.mu.RLock()
	rs := f.routes.byName[f.name]
	f.routes.mu.RUnlock()
	if len(rs) == 0 {
		http.Error(w, "no pool takes this forge's webhooks", http.StatusNotFound)
		return
	}
	// One body for every receiver: the API's (no copy), or read here once.
	body, err := forge.Body(r, maxWebhookBody)
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(w, "read body", http.StatusBadRequest)
		return
	}
	// The first receiver answers the forge; the others' answers only
	// matter to themselves, and they count as the same delivery.
	for i, rc := range rs {
		if i == 0 {
			rc.ServeWebhook(w, forge.WithBody(r, body), kick)
			continue
		}
		rc.ServeWebhook(discard{h: http.Header{}}, forge.AsRepeat(forge.WithBody(r, body)), kick)
	}
}

// discard is a ResponseWriter whose answer nobody reads.
type discard struct{ h http.Header }

func (d discard) Header() http.Header         { return d.h }
func (d discard) Write(b []byte) (int, error) { return len(b), nil }
func (d discard) WriteHeader(int)             {}
