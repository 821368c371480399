package github

// Scale-set demand: a pool in scale-set mode owns one runner scale set
// (GitHub's autoscaling API, spoken through github.com/actions/scaleset's
// own client), named for the pool and the host so that no two hosts share
// one. A listener session long-polls it; the statistics of each message
// (TotalAssignedJobs less TotalRunningJobs: jobs GitHub gave this scale
// set that no runner took yet) become the pool's queued jobs, told
// through forge.QueueNotifier as numbered slots, so the pool manager
// starts VMs as for any other queue. Each VM's runner is a JIT runner of
// the scale set, which only ever takes jobs GitHub assigned to the scale
// set: a job assigned to another host's scale set never starts a VM here.

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/actions/scaleset"
	"github.com/actions/scaleset/listener"
	"github.com/hashicorp/go-retryablehttp"
)

// Demand modes of a pool (PoolOptions.Demand).
const (
	DemandWebhooks = "webhooks" // workflow_job webhooks and polling (also "")
	DemandScaleSet = "scaleset" // a runner scale set's message session
)

// ScaleSetOptions tune scale-set mode; zero values take the defaults.
type ScaleSetOptions struct {
	// RetryWaitMin and RetryWaitMax bound the client's waits between
	// retries of a call (defaults 1s, 30s); RetryMax is its retries (4).
	RetryWaitMin, RetryWaitMax time.Duration
	RetryMax                   int
	// BackoffMin and BackoffMax bound the waits before a new session
	// after a failure or a session conflict (defaults 1s, 1m).
	BackoffMin, BackoffMax time.Duration
}

func (o *ScaleSetOptions) defaults() {
	if o.RetryWaitMin <= 0 {
		o.RetryWaitMin = time.Second
	}
	if o.RetryWaitMax <= 0 {
		o.RetryWaitMax = 30 * time.Second
	}
	if o.RetryMax <= 0 {
		o.RetryMax = 4
	}
	if o.BackoffMin <= 0 {
		o.BackoffMin = time.Second
	}
	if o.BackoffMax <= 0 {
		o.BackoffMax = time.Minute
	}
}

// ScaleSetName is the scale set of pool on host hostID: both names,
// lower case, joined by '-'; other characters than a-z, 0-9, '-' and '_'
// become '-'.
func ScaleSetName(pool, hostID string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-', r == '_':
			return r
		}
		return '-'
	}, strings.ToLower(pool+"-"+hostID))
}

// scaleSetDemand is a pool's scale set and its listener.
type scaleSetDemand struct {
	p      *Pool
	name   string
	owner  string // the session's owner name: the host id
	max    int
	o      ScaleSetOptions
	labels []string

	// poll is the session's transport: the forge connection's, with no
	// bound on the wait for headers, as GitHub holds a message poll open
	// about 50s (the retrying client's overall timeout still bounds it).
	poll *http.Transport

	// gate orders the scale set's existence: ensuring it and asking for
	// a JIT runner in it (shared) against DeleteScaleSet (sole), so that
	// a register under way cannot create it again once deleted.
	gate setGate
	// beforeCreate, when set (tests), runs before ensure creates the
	// scale set.
	beforeCreate func()

	mu       sync.Mutex
	client   *scaleset.Client
	id       int // the scale set's id; 0: not ensured yet
	lis      *listener.Listener
	stats    scaleset.RunnerScaleSetStatistic
	known    bool // statistics were read
	queued   int  // slots told as queued
	deleted  bool // DeleteScaleSet deleted it; start clears
	cancel   context.CancelFunc
	done     chan struct{}
	sessions int // sessions created, for tests and logs
}

func newScaleSetDemand(p *Pool, o PoolOptions) (*scaleSetDemand, error) {
	if o.HostID == "" || o.PoolName == "" {
		return nil, fmt.Errorf("github: scope %s: scale-set demand needs the pool's name and the host id", p.scope)
	}
	if o.MaxRunners <= 0 {
		return nil, fmt.Errorf("github: scope %s: scale-set demand needs the pool's maximum of VMs", p.scope)
	}
	so := o.ScaleSet
	so.defaults()
	poll := p.c.conn.Clone()
	poll.ResponseHeaderTimeout = 0
	return &scaleSetDemand{p: p, name: ScaleSetName(o.PoolName, o.HostID), owner: o.HostID, max: o.MaxRunners, o: so,
		labels: slices.Clone(o.Labels), poll: poll}, nil
}

// configURL is the scope's URL on GitHub's web host, which the scale-set
// client is given: https://github.com/ORG, /OWNER/REPO or
// /enterprises/SLUG; on GitHub Enterprise Server the API base without
// /api/v3.
func (c *Client) configURL(s Scope) string {
	u := *c.base
	if strings.EqualFold(u.Host, "api.github.com") {
		u.Host = "github.com"
	}
	u.Path = ""
	switch s.Kind {
	case "org":
		u.Path = "/" + s.Org
	case "repo":
		u.Path = "/" + s.Owner + "/" + s.Repo
	case "enterprise":
		u.Path = "/enterprises/" + s.Enterprise
	}
	u.RawQuery, u.Fragment = "", ""
	return u.String()
}

// retryable is a retrying HTTP client over tr: the forge's connection
// through apiBudgets (scaleTransport), or the session's.
func (s *scaleSetDemand) retryable(tr *http.Transport) *retryablehttp.Client {
	rc := retryablehttp.NewClient()
	rc.HTTPClient.Transport = tr
	rc.RetryWaitMin, rc.RetryWaitMax, rc.RetryMax = s.o.RetryWaitMin, s.o.RetryWaitMax, s.o.RetryMax
	rc.Logger = nil // the scale-set client sets its own
	return rc
}

// clientOptions are the scale-set client's options over tr.
func (s *scaleSetDemand) clientOptions(tr *http.Transport) []scaleset.HTTPOption {
	return []scaleset.HTTPOption{scaleset.WithRetryableHTTPClint(s.retryable(tr)), scaleset.WithLogger(s.quietLog())}
}

// apiBudgets sends the scale-set client's calls to GitHub's REST API
// (an installation token, a registration token, the Actions service's
// admin connection) on their credentials' rate budgets, as every other
// call of the driver: an exhausted budget or a secondary limit is waited
// for (or fails the call at once) there, not found out by sending. The
// App's JWT (creating installation tokens, under app/) spends the App's;
// the rest, the installation's (or the token's). Its calls to the
// Actions service (another budget, and another host at github.com) go
// to the connection (http.ErrSkipAltProtocol: see scaleTransport).
type apiBudgets struct {
	base              *url.URL // the REST API base, with a trailing slash
	app, installation http.RoundTripper
}

// apiNamespaces are the first segments of the REST paths the scale-set
// client calls.
var apiNamespaces = []string{"app", "orgs", "repos", "enterprises", "actions"}

func (a apiBudgets) RoundTrip(req *http.Request) (*http.Response, error) {
	if !strings.EqualFold(req.URL.Host, a.base.Host) || !strings.HasPrefix(req.URL.Path, a.base.Path) {
		return nil, http.ErrSkipAltProtocol
	}
	first, _, _ := strings.Cut(strings.TrimPrefix(req.URL.Path, a.base.Path), "/")
	switch {
	case first == "app":
		return a.app.RoundTrip(req)
	case slices.Contains(apiNamespaces, first):
		return a.installation.RoundTrip(req)
	}
	return nil, http.ErrSkipAltProtocol
}

// scaleTransport is the connection the scale-set client is given. The
// client takes only an *http.Transport (it checks), so b is registered
// on a copy of the forge's connection for both schemes, and what b does
// not take the copy sends itself. The copy speaks HTTP/1.1: HTTP/2
// would register itself for https in b's place.
func (c *Client) scaleTransport(b apiBudgets) *http.Transport {
	tr := c.conn.Clone()
	tr.Protocols = new(http.Protocols)
	tr.Protocols.SetHTTP1(true)
	tr.RegisterProtocol("https", b)
	tr.RegisterProtocol("http", b)
	return tr
}

// scaleClient is the scale-set client, made on first use. It is made
// outside s.mu (finding the installation asks GitHub, with retries), so
// the queue's readers never wait on the network; of two made at once the
// first stored is kept.
func (s *scaleSetDemand) scaleClient(ctx context.Context) (*scaleset.Client, error) {
	s.mu.Lock()
	cl := s.client
	s.mu.Unlock()
	if cl != nil {
		return cl, nil
	}
	cl, err := s.newScaleClient(ctx)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.client == nil {
		s.client = cl
	}
	return s.client, nil
}

// newScaleClient makes a scale-set client for the pool's credentials.
func (s *scaleSetDemand) newScaleClient(ctx context.Context) (*scaleset.Client, error) {
	c := s.p.c
	info := scaleset.SystemInfo{System: "nixos-fireactions", Subsystem: "scaleset"}
	var (
		cl  *scaleset.Client
		err error
	)
	if c.token != "" {
		opts := s.clientOptions(c.scaleTransport(apiBudgets{base: c.base, app: c.retry, installation: c.retry}))
		cl, err = scaleset.NewClientWithPersonalAccessToken(scaleset.NewClientWithPersonalAccessTokenConfig{
			GitHubConfigURL: c.configURL(s.p.scope), PersonalAccessToken: c.token, SystemInfo: info}, opts...)
	} else {
		// The pool's installation: its own installation_id, else the
		// forge's, else the one GitHub finds for the scope.
		inst := s.p.inst.fixed
		if inst == 0 {
			if inst, err = s.p.inst.lookup(ctx); err != nil {
				return nil, err
			}
		}
		opts := s.clientOptions(c.scaleTransport(apiBudgets{base: c.base, app: c.retry, installation: c.installationBudget(inst)}))
		cl, err = scaleset.NewClientWithGitHubApp(scaleset.ClientWithGitHubAppConfig{
			GitHubConfigURL: c.configURL(s.p.scope), SystemInfo: info,
			GitHubAppAuth: scaleset.GitHubAppAuth{ClientID: strconv.FormatInt(c.appID, 10), InstallationID: inst, PrivateKey: string(c.key)},
		}, opts...)
	}
	if err != nil {
		return nil, fmt.Errorf("github: scale-set client for %s: %w", s.p.scope, err)
	}
	return cl, nil
}

// ensure creates the scale set, or updates its labels, and returns its
// id; after DeleteScaleSet it refuses (ErrScaleSetDeleted). Callers hold
// s.gate shared.
func (s *scaleSetDemand) ensure(ctx context.Context) (int, error) {
	s.mu.Lock()
	deleted := s.deleted
	s.mu.Unlock()
	if deleted {
		return 0, fmt.Errorf("github: scale set %s: %w", s.name, ErrScaleSetDeleted)
	}
	cl, err := s.scaleClient(ctx)
	if err != nil {
		return 0, err
	}
	gid, err := s.groupID(ctx, cl)
	if err != nil {
		return 0, err
	}
	want := make([]scaleset.Label, len(s.labels))
	for i, l := range s.labels {
		want[i] = scaleset.Label{Name: l}
	}
	set, err := cl.GetRunnerScaleSet(ctx, gid, s.name)
	if err != nil {
		return 0, fmt.Errorf("github: look up scale set %s: %w", s.name, err)
	}
	switch {
	case set == nil:
		if s.beforeCreate != nil {
			s.beforeCreate()
		}
		set, err = cl.CreateRunnerScaleSet(ctx, &scaleset.RunnerScaleSet{Name: s.name, RunnerGroupID: gid, Labels: want,
			RunnerSetting: scaleset.RunnerSetting{DisableUpdate: true}})
		if err != nil {
			return 0, fmt.Errorf("github: create scale set %s: %w", s.name, err)
		}
		s.p.log.Info("scale set created", "scaleset", s.name, "id", set.ID)
	case !sameLabels(set.Labels, s.labels):
		set, err = cl.UpdateRunnerScaleSet(ctx, set.ID, &scaleset.RunnerScaleSet{Name: s.name, RunnerGroupID: gid, Labels: want,
			RunnerSetting: scaleset.RunnerSetting{DisableUpdate: true}})
		if err != nil {
			return 0, fmt.Errorf("github: update scale set %s: %w", s.name, err)
		}
		s.p.log.Info("scale set labels updated", "scaleset", s.name, "id", set.ID)
	}
	if set == nil || set.ID == 0 {
		return 0, fmt.Errorf("github: scale set %s: answer has no id", s.name)
	}
	s.mu.Lock()
	s.id = set.ID
	s.mu.Unlock()
	return set.ID, nil
}

func sameLabels(have []scaleset.Label, want []string) bool {
	if len(have) != len(want) {
		return false
	}
	for _, l := range have {
		if !slices.ContainsFunc(want, func(w string) bool { return strings.EqualFold(w, l.Name) }) {
			return false
		}
	}
	return true
}

// groupID is the pool's runner group's id at the Actions service.
func (s *scaleSetDemand) groupID(ctx context.Context, cl *scaleset.Client) (int, error) {
	g := s.p.group
	if g == "" {
		g = scaleset.DefaultRunnerGroup
	}
	if id, err := strconv.Atoi(g); err == nil && id > 0 {
		return id, nil
	}
	rg, err := cl.GetRunnerGroupByName(ctx, g)
	if err != nil {
		return 0, fmt.Errorf("github: runner group %q of scale set %s: %w", g, s.name, err)
	}
	return rg.ID, nil
}

// scaleSetID is the ensured scale set's id, or 0.
func (s *scaleSetDemand) scaleSetID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.id
}

// isSessionConflict reports a 409 of a session another listener holds
// (the client keeps the service's exception only in its error text).
func isSessionConflict(err error) bool {
	return err != nil && strings.Contains(err.Error(), "RunnerScaleSetSessionConflictException")
}

// quietLog is the log for the scale-set client and listener: warnings
// and errors only (they log every request and poll at INFO and DEBUG).
func (s *scaleSetDemand) quietLog() *slog.Logger {
	h := s.p.log.With("scaleset", s.name).Handler()
	return slog.New(minLevel{h, slog.LevelWarn})
}

// minLevel drops records below its level.
type minLevel struct {
	slog.Handler
	min slog.Level
}

func (m minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= m.min && m.Handler.Enabled(ctx, l)
}

func (m minLevel) WithAttrs(as []slog.Attr) slog.Handler {
	return minLevel{m.Handler.WithAttrs(as), m.min}
}
func (m minLevel) WithGroup(g string) slog.Handler { return minLevel{m.Handler.WithGroup(g), m.min} }

// isUnauthorized reports a 401 of the Actions service.
func isUnauthorized(err error) bool {
	return err != nil && strings.Contains(err.Error(), `status="401`)
}

// logAttrs are the scale set's log attributes.
func (s *scaleSetDemand) logAttrs() []any {
	return []any{slog.String("scaleset", s.name), slog.Int("scaleset_id", s.scaleSetID())}
}
