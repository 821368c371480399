// Package gitlab is the forge driver for GitLab CI.
//
// For each VM the orchestrator creates a GitLab runner of the pool's scope
// (instance, group or project) on the host, with POST /user/runners and
// the scope-wide access token, and hands the VM only that runner's own
// authentication token (glrt-…), inside a gitlab-runner config.toml the
// guest agent writes. The guest runs `gitlab-runner run-single
// --max-builds 1`: one job, then the VM powers off and the runner is
// deleted. The job runs as the runner's user and can read its token, so
// the runner is already deleted once its job has started (Retire): GitLab
// then refuses the token for more jobs while the job goes on with its job
// token. Demand comes from polling the scope's pending jobs and from Job
// Hook webhooks. The driver talks to GitLab through GitLab's official Go
// client.
//
// A Driver is one GitLab of the configuration (forge.Driver): the API
// client and the forge's one webhook endpoint, which checks, de-duplicates
// and reads each delivery once (a pending job's tags looked up once) for
// every scope it concerns. Each pool gets a Forge of it (Driver.Scope).
package gitlab

import (
	"crypto/sha256"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	gl "gitlab.com/gitlab-org/api/client-go/v2"

	"github.com/nixos-fireactions/nixos-fireactions/forge"
	"github.com/nixos-fireactions/nixos-fireactions/forge/forgehttp"
)

// Scope kinds: where runners are created and whose jobs they take.
const (
	ScopeInstance = "instance"
	ScopeGroup    = "group"
	ScopeProject  = "project"
)

// Scope is a GitLab instance, group or project.
type Scope struct {
	Kind string // ScopeInstance, ScopeGroup or ScopeProject
	Path string // full path of the group or project ("group/sub/project")
}

// RunnerSettings are the pool's GitLab runner settings.
type RunnerSettings struct {
	RunUntagged    bool          // also take jobs without tags
	Locked         bool          // a project runner stays with its project
	AccessLevel    string        // "not_protected" or "ref_protected"
	MaximumTimeout time.Duration // 0: none
	// Executor is "shell", "docker", or "auto": docker in a guest that
	// runs dockerd, else shell (the guest's agent picks the config.toml).
	Executor string
	// DefaultImage is the docker executor's image for jobs that name
	// none; default alpine:latest.
	DefaultImage string
}

// Options configure one pool's GitLab scope: the connection (URL,
// GuestURL, Token, CAFile, WebhookSecret, MaxPolledProjects,
// RequestTimeout, Log, Now), which NewDriver takes for every pool of the
// forge, and the scope (Scope, Pool, Runner, BootTimeout), which
// Driver.Scope takes per pool.
type Options struct {
	URL           string // GitLab's base URL as the host reaches it
	GuestURL      string // as guests reach it; default URL
	Token         string // scope-wide access token; stays on the host
	CAFile        string // extra PEM roots for a self-managed GitLab's certificate
	WebhookSecret string // the X-Gitlab-Token webhooks must carry; "" refuses them
	Scope         Scope
	Pool          string // the pool's name, for runner descriptions
	Runner        RunnerSettings
	// BootTimeout is the pool's boot timeout: a runner token that
	// expires sooner than it (plus a minute) is useless.
	BootTimeout time.Duration
	// MaxPolledProjects bounds how many projects' pending jobs one poll
	// of a group scope lists; a group with more projects is
	// polled round-robin, MaxPolledProjects per poll. Default 100.
	MaxPolledProjects int
	// RequestTimeout bounds each API request; default 30s.
	RequestTimeout time.Duration
	Log            *slog.Logger
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// ScopeOptions are one pool's scope of a GitLab driver.
type ScopeOptions struct {
	Scope       Scope
	Pool        string // the pool's name, for runner descriptions
	Runner      RunnerSettings
	BootTimeout time.Duration // see Options.BootTimeout
	// Log is the pool's logger; default the driver's.
	Log *slog.Logger
}

// Forge is one GitLab scope, handed out by a Driver.
type Forge struct {
	o        Options
	d        *Driver
	api      *gl.Client
	guestURL string
	caPEM    []byte
	log      *slog.Logger

	mu         sync.Mutex
	scopeID    int64                 // the group's or project's numeric ID, once known
	admin      bool                  // an instance scope's token is an administrator's
	tokens     map[int64]string      // runner id -> its own token, for removal by token
	taken      map[int64][]runnerJob // runner id -> its jobs, learnt before its retirement
	learning   map[int64]*learnRun   // runner id -> its job listings in flight (see learnRunnerJobs)
	suspects   map[string]time.Time  // runner names a failed create may have left
	polled     pollState
	hooked     map[int64]hookedJob // pending jobs learnt from webhooks
	unreadable map[int64]time.Time // group projects whose jobs answered 403/404, when last logged
	// settingUnseen: GitLab did not show whether a project turned this
	// scope's runners off, and the log said so (runnersoff.go).
	settingUnseen bool
	notify        func(forge.QueueChange) // see NotifyQueue
	told          map[string]bool         // jobs told queued (NotifyQueue)
}

var _ forge.Forge = (*Forge)(nil)

// New checks the options and returns the driver of a forge with that one
// scope (NewDriver, then Driver.Scope). It makes no request.
func New(o Options) (*Forge, error) {
	d, err := NewDriver("", o)
	if err != nil {
		return nil, err
	}
	return d.Scope(ScopeOptions{Scope: o.Scope, Pool: o.Pool, Runner: o.Runner, BootTimeout: o.BootTimeout, Log: o.Log})
}

// Driver is one GitLab of the configuration (a forges entry): the API
// client and its token, and the forge's one webhook endpoint, which
// checks, de-duplicates and reads each delivery once (a pending job's
// tags looked up once) for every scope it concerns. It implements
// forge.Driver and forge.WebhookReceiver.
type Driver struct {
	name     string
	o        Options // the connection part
	api      *gl.Client
	guestURL string
	caPEM    []byte
	secret   [32]byte // sha256 of the webhook secret
	log      *slog.Logger

	mu       sync.Mutex
	scopes   []*Forge          // those that take demand (Retain)
	seen     recent            // webhook deliveries already handled
	lookups  map[int64]*lookup // pending jobs being looked up after their delivery
	inFlight sync.WaitGroup    // those lookups, for tests
}

var (
	_ forge.Driver          = (*Driver)(nil)
	_ forge.WebhookReceiver = (*Driver)(nil)
)

// NewDriver checks the connection options (the scope options are
// Scope's) and returns the driver of the forge named name. It makes no
// request.
func NewDriver(name string, o Options) (*Driver, error) {
	if _, err := forgehttp.BaseURL(o.URL); err != nil {
		return nil, fmt.Errorf("gitlab: %w", err)
	}
	if o.Token == "" {
		return nil, fmt.Errorf("gitlab: no access token")
	}
	if o.MaxPolledProjects <= 0 {
		o.MaxPolledProjects = 100
	}
	if o.RequestTimeout <= 0 {
		o.RequestTimeout = 30 * time.Second
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	o.Scope, o.Pool, o.Runner, o.BootTimeout = Scope{}, "", RunnerSettings{}, 0
	base := strings.TrimRight(o.URL, "/")
	guest := strings.TrimRight(o.GuestURL, "/")
	if guest == "" {
		guest = base
	}
	conn, err := forgehttp.New(forgehttp.Options{CAFile: o.CAFile, Timeout: o.RequestTimeout})
	if err != nil {
		return nil, fmt.Errorf("gitlab: %w", err)
	}
	api, err := gl.NewClient(o.Token,
		gl.WithBaseURL(base),
		gl.WithHTTPClient(conn.Client),
		// A POST that may have reached GitLab is never repeated: a
		// repeated runner creation would leave a runner no VM holds.
		gl.WithOnlyIdempotentRetries(),
		gl.WithCustomRetryMax(3),
		gl.WithCustomRetryWaitMinMax(200*time.Millisecond, 2*time.Second),
		gl.WithURLWarningLogger(o.Log),
		gl.WithUserAgent("fireactions"),
	)
	if err != nil {
		return nil, fmt.Errorf("gitlab: %w", err)
	}
	return &Driver{
		name: name, o: o, api: api, guestURL: guest, caPEM: conn.CA, log: o.Log,
		secret: sha256.Sum256([]byte(o.WebhookSecret)), lookups: map[int64]*lookup{},
	}, nil
}

// Name implements forge.Driver.
func (d *Driver) Name() string { return d.name }

// Kind implements forge.Driver.
func (d *Driver) Kind() string { return "gitlab" }

// Scope checks one pool's scope options and hands out its scope, which
// shares the driver's API client and takes the demand of its webhooks.
// It makes no request.
func (d *Driver) Scope(s ScopeOptions) (*Forge, error) {
	switch s.Scope.Kind {
	case ScopeInstance:
	case ScopeGroup, ScopeProject:
		if s.Scope.Path == "" {
			return nil, fmt.Errorf("gitlab: %s scope without a path", s.Scope.Kind)
		}
	default:
		return nil, fmt.Errorf("gitlab: unknown scope kind %q", s.Scope.Kind)
	}
	if s.Runner.Executor == "" {
		s.Runner.Executor = "auto"
	}
	if s.Runner.Executor != "shell" && s.Runner.Executor != "docker" && s.Runner.Executor != "auto" {
		return nil, fmt.Errorf("gitlab: executor %q: want auto, shell or docker", s.Runner.Executor)
	}
	if s.Runner.DefaultImage == "" {
		s.Runner.DefaultImage = "alpine:latest"
	}
	if s.Runner.AccessLevel == "" {
		s.Runner.AccessLevel = "not_protected"
	}
	if s.BootTimeout <= 0 {
		s.BootTimeout = 2 * time.Minute
	}
	if s.Log == nil {
		s.Log = d.log
	}
	o := d.o
	o.Scope, o.Pool, o.Runner, o.BootTimeout, o.Log = s.Scope, s.Pool, s.Runner, s.BootTimeout, s.Log
	f := &Forge{
		o: o, d: d, api: d.api, guestURL: d.guestURL, caPEM: d.caPEM, log: s.Log,
		tokens: map[int64]string{}, taken: map[int64][]runnerJob{}, learning: map[int64]*learnRun{}, suspects: map[string]time.Time{}, hooked: map[int64]hookedJob{},
	}
	d.mu.Lock()
	d.scopes = append(d.scopes, f)
	d.mu.Unlock()
	return f, nil
}

// Retain implements forge.Driver: of the scopes handed out, only those in
// inUse take the demand of webhooks; the others still answer calls.
func (d *Driver) Retain(inUse []forge.Forge) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.scopes = forge.Retained(d.scopes, inUse)
}

// Kind implements forge.Forge.
func (f *Forge) Kind() string { return "gitlab" }
