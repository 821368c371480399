// Package gitea is the forge driver for Gitea and Forgejo Actions.
//
// Forgejo is a flavor of the driver (forgejo.go): the same runner
// protocol, other REST paths for the registration token and for demand,
// and its own runner's one-job mode in the guest.
//
// The orchestrator registers each ephemeral runner itself, on the host,
// through Gitea's runner protocol with the scope's registration token, and
// hands the VM only the new runner's own uuid and token. The scope-wide API
// token and registration token never leave the host.
//
// A Driver is one Gitea of the configuration (forge.Driver: its URL,
// token, HTTP client and webhook endpoint); each pool gets a Forge of it
// (Driver.Scope). Gitea's workflow_job webhooks (Gitea 1.26) tell the
// scopes a job joined or left the queue at once; polling stays the
// authority and heals lost deliveries.
package gitea

import (
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/forge"
	"github.com/nixos-fireactions/nixos-fireactions/forge/forgehttp"
)

// Scope is where runners are registered: the whole instance, an org or a repo.
type Scope struct {
	Kind  string // "instance", "org" or "repo"
	Org   string // for "org"
	Owner string // for "repo"
	Repo  string // for "repo"
	// Labels are the pool's labels: Forgejo lists only the jobs whose
	// labels are all among those asked.
	Labels []string
}

// apiPrefix is the REST path under which the scope's actions endpoints live.
func (s Scope) apiPrefix() (string, error) {
	switch {
	case s.Kind == "instance":
		return "/api/v1/admin", nil
	case s.Kind == "org" && s.Org != "":
		return "/api/v1/orgs/" + url.PathEscape(s.Org), nil
	case s.Kind == "repo" && s.Owner != "" && s.Repo != "":
		return "/api/v1/repos/" + url.PathEscape(s.Owner) + "/" + url.PathEscape(s.Repo), nil
	case s.Kind == "org" || s.Kind == "repo":
		return "", fmt.Errorf("gitea: %s scope without its name", s.Kind)
	}
	return "", fmt.Errorf("gitea: unknown scope kind %q", s.Kind)
}

// Options configure one Gitea scope.
type Options struct {
	URL      string // as the host reaches Gitea
	GuestURL string // as guests reach Gitea; default URL
	Token    string // scope-wide API token; stays on the host
	CAFile   string // extra PEM roots for Gitea's TLS certificate
	Scope    Scope
	Version  string // reported as the runner's version
	// WebhookSecret checks the X-Gitea-Signature of webhook deliveries;
	// empty: no webhooks (deliveries get 404).
	WebhookSecret string
	Log           *slog.Logger // default slog.Default()
	Flavor        string       // FlavorGitea, FlavorForgejo or FlavorAuto ("": auto)
}

// Forge is a Gitea scope, handed out by a Driver.
type Forge struct {
	scope    Scope
	base     string
	guestURL string
	token    string
	prefix   string
	version  string
	http     *http.Client
	probe    *flavorProbe
	labels   []string
	// runnersPaths are Forgejo's paths of the scope's runner calls.
	runnersPaths []string

	log    *slog.Logger
	driver *Driver

	// fetching holds the one registration-token fetch under way (a
	// semaphore of one that a caller's context can give up on); it guards
	// regToken and regAt. The fetch's network I/O is never under mu, which
	// every webhook delivery takes.
	fetching chan struct{}
	regToken string
	regAt    time.Time

	mu sync.Mutex
	// hooked are the jobs a webhook said joined the queue, by id, with
	// when; QueuedJobs merges them with its read (see hooked.go).
	hooked map[int64]hookedJob
	// notify is told each queue change a delivery makes; nil: the
	// delivery's kick is called instead (NotifyQueue).
	notify func(forge.QueueChange)
	// suspects are runner names a registration may have created although
	// its answer was lost, with when (see sweep.go).
	suspects map[string]time.Time
	// scopeReadAt is when scopeReadable last found the org or repo.
	scopeReadAt time.Time
}

var _ forge.Forge = (*Forge)(nil)

// New checks the options and returns the driver of a forge with that one
// scope (NewDriver, then Driver.Scope).
func New(o Options) (*Forge, error) {
	d, err := NewDriver("", o)
	if err != nil {
		return nil, err
	}
	return d.Scope(o.Scope)
}

// Driver is one Gitea of the configuration (a forges entry): its URL,
// token, HTTP client and webhook endpoint, shared by the scopes it hands
// out. It implements forge.Driver and forge.WebhookReceiver.
type Driver struct {
	name       string
	o          Options // all but Scope
	http       *http.Client
	log        *slog.Logger
	deliveries *forge.Deliveries
	hooks      *forge.Verifier // reads and verifies deliveries

	mu     sync.Mutex
	scopes []*Forge // handed out and in use (Retain)
	probe  *flavorProbe
}

var (
	_ forge.Driver          = (*Driver)(nil)
	_ forge.WebhookReceiver = (*Driver)(nil)
	_ forge.QueueNotifier   = (*Forge)(nil)
)

// NewDriver checks the connection options (o.Scope is Scope's) and
// returns the driver of the forge named name.
func NewDriver(name string, o Options) (*Driver, error) {
	if _, err := forgehttp.BaseURL(o.URL); err != nil {
		return nil, fmt.Errorf("gitea: %w", err)
	}
	conn, err := forgehttp.New(forgehttp.Options{CAFile: o.CAFile, Timeout: 30 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("gitea: %w", err)
	}
	if o.GuestURL == "" {
		o.GuestURL = o.URL
	}
	o.Scope = Scope{}
	log := o.Log
	if log == nil {
		log = slog.Default()
	}
	log = log.With("forge", name)
	probe, err := newFlavorProbe(strings.TrimRight(o.URL, "/"), o.Flavor, conn.Client)
	if err != nil {
		return nil, err
	}
	d := &Driver{name: name, o: o, http: conn.Client, log: log, deliveries: forge.NewDeliveries(maxDeliveries), probe: probe}
	d.hooks = &forge.Verifier{Kind: "gitea", IDHeader: "X-Gitea-Delivery", Limit: maxWebhookBody, Log: log,
		// X-Gitea-Signature: the hex HMAC-SHA256 of the body with the secret.
		Signed: func(h http.Header, body []byte) bool {
			return forge.SignedSHA256(o.WebhookSecret, h.Get("X-Gitea-Signature"), body)
		}}
	return d, nil
}

// Name implements forge.Driver.
func (d *Driver) Name() string { return d.name }

// Kind implements forge.Driver.
func (d *Driver) Kind() string { return "gitea" }

// Retain implements forge.Driver: the scopes not in inUse take no more
// webhook deliveries.
func (d *Driver) Retain(inUse []forge.Forge) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.scopes = forge.Retained(d.scopes, inUse)
}

// Scope checks a pool's scope and hands it out, sharing the driver's
// HTTP client.
func (d *Driver) Scope(s Scope) (*Forge, error) {
	prefix, err := s.apiPrefix()
	if err != nil {
		return nil, err
	}
	f := &Forge{
		fetching: make(chan struct{}, 1),
		scope:    s,
		base:     strings.TrimRight(d.o.URL, "/"),
		guestURL: strings.TrimRight(d.o.GuestURL, "/"),
		token:    d.o.Token,
		prefix:   prefix,
		version:  d.o.Version,
		http:     d.http,
		log:      d.log,
		driver:   d,
		hooked:   map[int64]hookedJob{},
		suspects: map[string]time.Time{},
		probe:    d.probe,
		labels:   append([]string(nil), s.Labels...),

		runnersPaths: s.forgejoRunners(),
	}
	d.mu.Lock()
	d.scopes = append(d.scopes, f)
	d.mu.Unlock()
	return f, nil
}

// Kind implements forge.Forge.
func (f *Forge) Kind() string { return "gitea" }
