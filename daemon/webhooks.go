package daemon

import (
	"github.com/nixos-fireactions/nixos-fireactions/forge"
	"github.com/nixos-fireactions/nixos-fireactions/metrics"
)

// webhooks are the API's webhook routes: /webhooks/<forge name> goes to
// that forge's driver, once per delivery however many pools name the
// forge (the driver reads, verifies and de-duplicates it and updates the
// demand of the scopes it concerns), counted once by the metrics. A forge
// whose driver takes no webhooks has no route; one whose webhooks are off
// (no webhook_secret_file) answers 404. The drivers live as long as the
// daemon, so a reload leaves the routes as they are.
func (fs *forgeSet) webhooks(mx *metrics.Metrics) map[string]forge.WebhookReceiver {
	out := map[string]forge.WebhookReceiver{}
	for name, d := range fs.drivers {
		if w, ok := d.(forge.WebhookReceiver); ok {
			out[name] = mx.Webhooks(name, w)
		}
	}
	return out
}
