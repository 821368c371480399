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
// token and HTTP client; Gitea sends no webhooks it takes); each pool
// gets a Forge of it (Driver.Scope).
package gitea

import (
	"fmt"
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
	switch s.Kind {
	case "instance":
		return "/api/v1/admin", nil
	case "org":
		return "/api/v1/orgs/" + url.PathEscape(s.Org), nil
	case "repo":
		return "/api/v1/repos/" + url.PathEscape(s.Owner) + "/" + url.PathEscape(s.Repo), nil
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
	Flavor   string // FlavorGitea, FlavorForgejo or FlavorAuto ("": auto)
}

// Forge is a Gitea scope, handed out by a Driver.
type Forge struct {
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

	mu       sync.Mutex
	regToken string
	regAt    time.Time
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
// token and HTTP client, shared by the scopes it hands out. Gitea sends
// no webhooks the driver takes. It implements forge.Driver.
type Driver struct {
	name  string
	o     Options // all but Scope
	http  *http.Client
	probe *flavorProbe
}

var _ forge.Driver = (*Driver)(nil)

// NewDriver checks the connection options (o.Scope is Scope's) and
// returns the driver of the forge named name.
func NewDriver(name string, o Options) (*Driver, error) {
	u, err := url.Parse(o.URL)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, fmt.Errorf("gitea: url %q is not an absolute http(s) URL", o.URL)
	}
	conn, err := forgehttp.New(forgehttp.Options{CAFile: o.CAFile, Timeout: 30 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("gitea: %w", err)
	}
	if o.GuestURL == "" {
		o.GuestURL = o.URL
	}
	o.Scope = Scope{}
	probe, err := newFlavorProbe(strings.TrimRight(o.URL, "/"), o.Flavor, conn.Client)
	if err != nil {
		return nil, err
	}
	return &Driver{name: name, o: o, http: conn.Client, probe: probe}, nil
}

// Name implements forge.Driver.
func (d *Driver) Name() string { return d.name }

// Kind implements forge.Driver.
func (d *Driver) Kind() string { return "gitea" }

// Retain implements forge.Driver: a Gitea scope holds no share of the
// forge's demand, so there is nothing to drop.
func (d *Driver) Retain([]forge.Forge) {}

// Scope checks a pool's scope and hands it out, sharing the driver's
// HTTP client.
func (d *Driver) Scope(s Scope) (*Forge, error) {
	prefix, err := s.apiPrefix()
	if err != nil {
		return nil, err
	}
	return &Forge{
		base:     strings.TrimRight(d.o.URL, "/"),
		guestURL: strings.TrimRight(d.o.GuestURL, "/"),
		token:    d.o.Token,
		prefix:   prefix,
		version:  d.o.Version,
		http:     d.http,
		probe:    d.probe,
		labels:   append([]string(nil), s.Labels...),

		runnersPaths: s.forgejoRunners(),
	}, nil
}

// Kind implements forge.Forge.
func (f *Forge) Kind() string { return "gitea" }
