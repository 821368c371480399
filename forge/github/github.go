// Package github is the forge driver for GitHub Actions (github.com and
// GitHub Enterprise Server). It exists to give every job its own
// just-in-time runner: the orchestrator, authenticated as a GitHub App
// installation (or with a personal access token), asks GitHub for a JIT
// runner configuration per VM at org, repo or enterprise scope and hands
// the VM only that configuration; the App key and installation tokens stay
// on the host. Demand comes from workflow_job webhooks, merged with a
// polling reconciler that heals missed and out-of-order deliveries. Calls
// respect GitHub's rate limits and retry transient failures.
//
// One Client is the forge.Driver of a forge entry of the configuration:
// its connection, credentials, rate-limit budget, its one webhook
// endpoint (a delivery read, verified and de-duplicated once) and the
// demand it feeds. Each pool gets a Pool of it (Client.Pool), its scope.
package github

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bradleyfalzon/ghinstallation/v2"
	gh "github.com/google/go-github/v93/github"

	"github.com/nixos-fireactions/nixos-fireactions/forge"
	"github.com/nixos-fireactions/nixos-fireactions/forge/forgehttp"
)

// ErrEnterpriseNeedsPAT refuses an enterprise pool of a GitHub App:
// GitHub's description marks the enterprise runner operations
// x-github.enabledForGitHubApps: false, and GitHub answers an
// installation token there 403 "Resource not accessible by integration".
var ErrEnterpriseNeedsPAT = errors.New("the enterprise runner API takes no GitHub App token: " +
	"authenticate with a personal access token (classic) with the manage_runners:enterprise scope")

// Options configure the connection to one GitHub.
type Options struct {
	// Name is the forge's name in the configuration, for logs.
	Name string
	// URL is the REST API base: https://api.github.com, or
	// https://HOST/api/v3 for GitHub Enterprise Server.
	URL string
	// CAFile holds extra PEM roots for the server's certificate.
	CAFile string
	// Token is a personal access token; or set AppID and AppPrivateKey.
	Token string
	// AppID, AppPrivateKey and InstallationID authenticate as a GitHub
	// App; InstallationID is the pools' installation unless a pool names
	// its own (PoolOptions.InstallationID); 0 looks it up from each pool's
	// scope.
	AppID          int64
	AppPrivateKey  []byte
	InstallationID int64
	// WebhookSecret checks webhook deliveries; empty turns webhooks off.
	WebhookSecret string
	// PollInterval is how often queued jobs are polled; default 30s.
	PollInterval time.Duration
	// CancelRuns is what FailJob does to the workflow run of a dead
	// runner's job: "force" (also ""), "cancel" or "off" (see FailJob).
	CancelRuns string
	// Retry tunes retries and rate-limit waits; zero values take the
	// defaults.
	Retry RetryOptions
	Log   *slog.Logger
}

// Client is one GitHub connection: transport, credentials, demand.
type Client struct {
	name     string
	base     *url.URL // API base, with a trailing slash
	token    string
	appID    int64
	key      []byte
	instID   int64
	retry    *retryTransport // the forge's credential: the App's JWT, or the token
	conn     *http.Transport // the connection under retry (scale-set client)
	retryOpt RetryOptions
	apps     *gh.Client // authenticated as the App (JWT); nil with a token
	log      *slog.Logger
	interval time.Duration
	cancel   string // Options.CancelRuns, "" made "force"
	secret   string
	now      func() time.Time // the demand view's clock; tests fake it
	demand   *demand
	hooks    *forge.Verifier // reads and verifies deliveries

	mu    sync.Mutex
	pools []*Pool
	// budgets are the installations' rate budgets by installation id:
	// GitHub counts each installation's calls apart, and apart from the
	// App's own (its JWT).
	budgets map[int64]*retryTransport
	all     []*Pool           // every pool handed out, retired or not (Quiesce)
	labels  map[string]string // lower case -> the configuration's spelling
	// labelGen counts the changes of labels: jobs built with an older
	// spelling are built again (jobOf).
	labelGen atomic.Uint64
}

var (
	_ forge.Driver          = (*Client)(nil)
	_ forge.WebhookReceiver = (*Client)(nil)
)

// Name implements forge.Driver: the forge's name in the configuration.
func (c *Client) Name() string { return c.name }

// Kind implements forge.Driver.
func (c *Client) Kind() string { return "github" }

// New checks the options and connects nothing yet: the first call does.
func New(o Options) (*Client, error) {
	u, err := url.Parse(o.URL)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, fmt.Errorf("github: url %q is not an absolute http(s) URL", o.URL)
	}
	if !strings.HasSuffix(u.Path, "/") {
		u.Path += "/"
	}
	app := o.AppID != 0 || len(o.AppPrivateKey) > 0
	switch {
	case app && o.Token != "":
		return nil, errors.New("github: give a GitHub App or a token, not both")
	case !app && o.Token == "":
		return nil, errors.New("github: give a GitHub App (app id and private key) or a token")
	case app && (o.AppID == 0 || len(o.AppPrivateKey) == 0):
		return nil, errors.New("github: a GitHub App needs both its id and its private key")
	}
	// Each attempt is bounded by the retry transport (Retry.AttemptTimeout),
	// so the connection's client sets no bound of its own.
	conn, err := forgehttp.New(forgehttp.Options{CAFile: o.CAFile})
	if err != nil {
		return nil, fmt.Errorf("github: %w", err)
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.PollInterval <= 0 {
		o.PollInterval = 30 * time.Second
	}
	switch o.CancelRuns {
	case "":
		o.CancelRuns = cancelForce
	case cancelForce, cancelOnly, cancelOff:
	default:
		return nil, fmt.Errorf("github: cancel_runs %q: want force, cancel or off", o.CancelRuns)
	}
	log := o.Log.With("forge", o.Name)
	c := &Client{
		name: o.Name, base: u, token: o.Token, appID: o.AppID, key: o.AppPrivateKey, instID: o.InstallationID,
		retry: newRetryTransport(conn.Transport, o.Retry, log), conn: conn.Transport, retryOpt: o.Retry, log: log, interval: o.PollInterval, cancel: o.CancelRuns,
		secret: o.WebhookSecret, now: time.Now, demand: newDemand(), labels: map[string]string{}, budgets: map[int64]*retryTransport{},
	}
	c.demand.notify = c.notifyQueue
	c.hooks = &forge.Verifier{Kind: "github", IDHeader: "X-GitHub-Delivery", Limit: maxWebhookBody, Log: log,
		Signed: func(h http.Header, body []byte) bool { return signed(c.secret, h.Get("X-Hub-Signature-256"), body) }}
	if app {
		atr, err := ghinstallation.NewAppsTransport(c.retry, o.AppID, o.AppPrivateKey)
		if err != nil {
			return nil, fmt.Errorf("github: app private key: %w", err)
		}
		atr.BaseURL = strings.TrimSuffix(u.String(), "/")
		if c.apps, err = c.newGitHub(atr, ""); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// newGitHub is a go-github client on the API base over tr; a non-empty
// token authenticates it.
func (c *Client) newGitHub(tr http.RoundTripper, token string) (*gh.Client, error) {
	base := c.base.String()
	// The retry transport waits for rate limits (within bounds); go-github
	// would refuse calls on its own instead.
	opts := []gh.ClientOptionsFunc{gh.WithTransport(tr), gh.WithURLs(&base, &base), gh.WithUserAgent("nixos-fireactions"),
		gh.WithDisableRateLimitCheck()}
	if token != "" {
		opts = append(opts, gh.WithAuthToken(token))
	}
	cl, err := gh.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("github: client: %w", err)
	}
	return cl, nil
}

// RateLimitRemaining is the API budget of the forge's own credential (the
// App's JWT, or the token) left in the current window, as GitHub last
// said; -1 before any answer.
func (c *Client) RateLimitRemaining() int { return c.retry.remaining() }

// installationBudget is the rate budget of an App installation: its own
// transport, tracking and waiting for its own limits.
func (c *Client) installationBudget(id int64) *retryTransport {
	c.mu.Lock()
	defer c.mu.Unlock()
	rt := c.budgets[id]
	if rt == nil {
		rt = newRetryTransport(c.conn, c.retryOpt, c.log.With("installation", id))
		c.budgets[id] = rt
	}
	return rt
}

// PoolOptions are one pool's settings.
type PoolOptions struct {
	Scope Scope
	// Repos are the repositories (OWNER/NAME) an org or enterprise pool
	// polls; a repo pool polls its own.
	Repos []string
	// Labels are the labels the pool's runners offer.
	Labels []string
	// Group is the runner group: a name (org scope) or a numeric id; ""
	// is the default group.
	Group string
	// InstallationID is the App installation the pool acts as; 0: the
	// forge's (Options.InstallationID), else looked up from the scope.
	InstallationID int64
	// Demand is where the pool's demand comes from: DemandWebhooks (also
	// "") or DemandScaleSet, a runner scale set of its own.
	Demand string
	// PoolName, HostID and MaxRunners (the pool's most VMs) name the
	// scale set and give its capacity; scale-set mode only.
	PoolName, HostID string
	MaxRunners       int
	// ScaleSet tunes scale-set mode.
	ScaleSet ScaleSetOptions
}
