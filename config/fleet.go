package config

import (
	"errors"
	"net/url"
	"time"
)

// Fleet joins this host to a fleet of hosts that share their demand
// through NATS JetStream (package fleet). Absent: the host serves every
// job it sees, alone.
type Fleet struct {
	URLs           []string      `yaml:"urls" doc:"Required. NATS server URLs of the fleet's NATS cluster (nats:// or tls://, host and port, no user or password: those go in credentials_file)."`
	CredsFile      string        `yaml:"credentials_file" doc:"NATS credentials file (a user JWT and NKey seed, as nsc writes them): an absolute path, mode 600 (or 400), owned by root or the user running fireactions. Set this or token_file (or insecure_no_auth)."`
	TokenFile      string        `yaml:"token_file" doc:"File holding the NATS token the fleet's servers require (authorization { token } in nats-server's config): an absolute path, mode 600 (or 400), owned by root or the user running fireactions. Set this or credentials_file (or insecure_no_auth)."`
	InsecureNoAuth bool          `yaml:"insecure_no_auth" doc:"Connect to NATS without credentials_file or token_file. Unsafe: guests can reach LAN addresses unless block_private is set, so any CI job could then connect to the fleet's NATS, squat every job's claim key or delete the buckets. For a NATS reachable from this host only; fireactions warns at start."`
	ClaimTTL       time.Duration `yaml:"claim_ttl" doc:"How long a host's claim on a queued job outlives its last refresh: a dead or cut-off host's jobs go to another host within it (1s-30s). Every host of a fleet must set the same."`
	Replicas       int           `yaml:"replicas" doc:"How many NATS servers keep a copy of the fleet's KV buckets (JetStream stream replicas, 1-5): 3 on a three-node NATS cluster, so that losing one node does not stop claiming; 1 for a single server. Fixed when the buckets are first made: every host of a fleet must set the same."`
	OnUnreachable  string        `yaml:"on_unreachable" doc:"When NATS cannot be reached at start: fail (exit with an error naming the URLs) or local (serve every job this host sees, as without a fleet, until restarted). A host that loses NATS later claims nothing new until it is back."`
}

// FleetDefaults are the defaults of a fleet section.
func FleetDefaults() Fleet {
	return Fleet{ClaimTTL: 30 * time.Second, Replicas: 1, OnUnreachable: "fail"}
}

// deriveFleet fills a fleet section's empty fields from FleetDefaults.
func deriveFleet(c *Config) {
	if c.Fleet == nil {
		return
	}
	d := FleetDefaults()
	if c.Fleet.ClaimTTL == 0 {
		c.Fleet.ClaimTTL = d.ClaimTTL
	}
	if c.Fleet.Replicas == 0 {
		c.Fleet.Replicas = d.Replicas
	}
	if c.Fleet.OnUnreachable == "" {
		c.Fleet.OnUnreachable = d.OnUnreachable
	}
}

// fleet checks the fleet section.
func (v *validator) fleet(f field, fl *Fleet) {
	if fl == nil {
		return
	}
	if len(fl.URLs) == 0 {
		v.check(rule{f.child("urls"), errors.New("at least one NATS URL is required")})
	}
	for i, u := range fl.URLs {
		v.check(rule{f.child("urls").index(i), natsURL(u)})
	}
	var authErr error
	if fl.CredsFile == "" && fl.TokenFile == "" && !fl.InsecureNoAuth {
		authErr = errorf("the fleet's NATS needs authentication: set fleet.credentials_file or fleet.token_file (or insecure_no_auth: true, unsafe: any CI job that reaches NATS could squat or delete the fleet's claims)")
	}
	v.check(
		rule{f, authErr},
		rule{f.child("credentials_file"), optional(fl.CredsFile, v.secretFile)},
		rule{f.child("token_file"), optional(fl.TokenFile, v.secretFile)},
		rule{f.child("claim_ttl"), errors.Join(durationAtLeast(fl.ClaimTTL, time.Second), maximumDuration(fl.ClaimTTL, 30*time.Second))},
		rule{f.child("replicas"), between(fl.Replicas, 1, 5)},
		rule{f.child("on_unreachable"), oneOf(fl.OnUnreachable, "fail", "local")},
	)
}

// natsURL accepts nats://host:port or tls://host:port without user
// information: a password in the configuration would reach the Nix store.
func natsURL(s string) error {
	u, err := url.Parse(s)
	switch {
	case err != nil || u.Host == "" || u.Hostname() == "":
		return errorf("%q is not a NATS URL (such as nats://10.0.0.1:4222)", s)
	case u.Scheme != "nats" && u.Scheme != "tls":
		return errorf("%q: scheme %q is not nats or tls", s, u.Scheme)
	case u.User != nil:
		return errorf("%q holds a user or password: put credentials in credentials_file", redactURL(u))
	case u.Port() == "":
		return errorf("%q has no port (NATS listens on 4222)", s)
	case u.Path != "" && u.Path != "/" || u.RawQuery != "":
		return errorf("%q has a path or query", s)
	}
	return nil
}

func redactURL(u *url.URL) string {
	c := *u
	c.User = nil
	return c.String()
}

func maximumDuration(d, hi time.Duration) error {
	if d > hi {
		return errorf("%s is more than %s", shortDuration(d), shortDuration(hi))
	}
	return nil
}
