package config

import "time"

// Limits bound what guests and anonymous clients can make the host hold
// (issue 14, items 3, 6 and 7; owned by the listener/webhook work): the
// HTTP servers' timeouts and connection caps (the agent listener every
// guest reaches, the API's TCP listener whose /webhooks face the forges)
// and the size of webhook deliveries.
type Limits struct {
	ReadHeaderTimeout   time.Duration `yaml:"read_header_timeout" doc:"Agent listener, API and metrics: how long a client may take to send a request's headers (1s-10m)."`
	ReadTimeout         time.Duration `yaml:"read_timeout" doc:"Agent listener, API and metrics: how long a client may take to send a whole request, body included; a trickling client is cut (1s-10m; console streams are exempt)."`
	WriteTimeout        time.Duration `yaml:"write_timeout" doc:"Agent listener, API and metrics: how long an answer may take to write to a client that does not read (1s-10m; console streams are exempt)."`
	IdleTimeout         time.Duration `yaml:"idle_timeout" doc:"Agent listener, API and metrics: how long a kept-alive connection may wait for its next request (1s-1h)."`
	MaxConns            int           `yaml:"max_conns" doc:"Open connections each listener (agent, API TCP, metrics) takes in all; past it new ones are closed at once (1-65536)."`
	AgentConnsPerSource int           `yaml:"agent_conns_per_source" doc:"Open connections one guest (one source address) may have to the agent listener; past it new ones are closed at once (1-1024; an agent needs 1)."`
	APIConnsPerSource   int           `yaml:"api_conns_per_source" doc:"Open connections one source address may have to the API's TCP listener, webhooks included (1-65536)."`
	WebhookMaxBody      int64         `yaml:"webhook_max_body" doc:"Largest webhook delivery body taken, in bytes; a larger one is answered 413 before its signature is checked (1024-26214400; GitHub's and GitLab's job events are a few KiB)."`
	WebhookBuffer       int64         `yaml:"webhook_buffer" doc:"Bytes of webhook bodies held in memory at once across all deliveries being read; a delivery that would pass it is answered 503 (webhook_max_body to 1 GiB)."`
}

func limitsDefaults() Limits {
	return Limits{
		ReadHeaderTimeout:   10 * time.Second,
		ReadTimeout:         30 * time.Second,
		WriteTimeout:        30 * time.Second,
		IdleTimeout:         time.Minute,
		MaxConns:            512,
		AgentConnsPerSource: 4,
		APIConnsPerSource:   32,
		WebhookMaxBody:      1 << 20,
		WebhookBuffer:       32 << 20,
	}
}

// limits checks the limits section.
func (v *validator) limits(f field, l *Limits) {
	inRange := func(d, lo, hi time.Duration) error {
		if err := durationAtLeast(d, lo); err != nil {
			return err
		}
		if d > hi {
			return errorf("%s is more than %s", shortDuration(d), shortDuration(hi))
		}
		return nil
	}
	between64 := func(n, lo, hi int64) error {
		if n < lo || n > hi {
			return errorf("%d is not between %d and %d", n, lo, hi)
		}
		return nil
	}
	v.check(
		rule{f.child("read_header_timeout"), inRange(l.ReadHeaderTimeout, time.Second, 10*time.Minute)},
		rule{f.child("read_timeout"), inRange(l.ReadTimeout, time.Second, 10*time.Minute)},
		rule{f.child("write_timeout"), inRange(l.WriteTimeout, time.Second, 10*time.Minute)},
		rule{f.child("idle_timeout"), inRange(l.IdleTimeout, time.Second, time.Hour)},
		rule{f.child("max_conns"), between(l.MaxConns, 1, 65536)},
		rule{f.child("agent_conns_per_source"), between(l.AgentConnsPerSource, 1, 1024)},
		rule{f.child("api_conns_per_source"), between(l.APIConnsPerSource, 1, 65536)},
		rule{f.child("webhook_max_body"), between64(l.WebhookMaxBody, 1024, 25<<20)},
		rule{f.child("webhook_buffer"), between64(l.WebhookBuffer, min(max(l.WebhookMaxBody, 1024), 25<<20), 1<<30)},
	)
}
