package github_test

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/forge"
	"github.com/nixos-fireactions/nixos-fireactions/forge/github"
	"github.com/nixos-fireactions/nixos-fireactions/internal/double/githubdouble"
	"github.com/nixos-fireactions/nixos-fireactions/internal/double/githubdouble/openapi"
	"github.com/nixos-fireactions/nixos-fireactions/internal/hosttest"
)

const (
	appID     = 4242
	specPath  = "testdata/github-actions-runners.openapi.json"
	hooksPath = "testdata/github-workflow_job.examples.json"
)

// testKey is the test App's key, made once: RSA key generation is slow.
var testKey = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
})

func testKeyPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(testKey())})
}

var testSpec = sync.OnceValues(func() (*openapi.Description, error) { return githubdouble.LoadSpec(specPath) })

// env is a GitHub double on a local server, every exchange held to the
// description: a test fails on any violation.
type env struct {
	t   *testing.T
	d   *githubdouble.Double
	srv *httptest.Server
	url string // the API base the driver is given
	log *hosttest.SyncBuffer
	// delay holds every exchange this long first (slow).
	delay *atomic.Int64
}

type envOptions struct {
	tls      bool   // serve HTTPS with httptest's own CA
	prefix   string // "/api/v3" for GitHub Enterprise Server
	tokenTTL time.Duration
	pats     []string
	// patScopes are each PAT's classic scopes (githubdouble.Options;
	// unlisted: all the driver's documentation asks for).
	patScopes map[string][]string
	// scale-set service: admin token life, idle session life, message
	// long-poll wait (githubdouble.Options).
	adminTTL, sessionIdle, messageWait time.Duration
}

func newEnv(t *testing.T, o envOptions) *env {
	t.Helper()
	spec, err := testSpec()
	if err != nil {
		t.Fatal(err)
	}
	var d *githubdouble.Double
	delay := new(atomic.Int64)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if wait := time.Duration(delay.Load()); wait > 0 {
			select {
			case <-time.After(wait):
			case <-r.Context().Done():
				return
			}
		}
		d.ServeHTTP(w, r)
	})
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are expected
	if o.tls {
		srv.StartTLS()
	} else {
		srv.Start()
	}
	d = githubdouble.New(githubdouble.Options{
		Spec: spec, Prefix: o.prefix, AppID: appID, AppKey: &testKey().PublicKey, PATs: o.pats, PATScopes: o.patScopes,
		RunnerURL: srv.URL + o.prefix, TokenTTL: o.tokenTTL, Seed: 7,
		AdminTokenTTL: o.adminTTL, SessionIdle: o.sessionIdle, MessageWait: o.messageWait,
	})
	t.Cleanup(func() {
		srv.Close()
		d.Close()
		for _, v := range d.Violations() {
			t.Errorf("GitHub's description violated: %s", v)
		}
	})
	return &env{t: t, d: d, srv: srv, url: srv.URL + o.prefix, log: &hosttest.SyncBuffer{}, delay: delay}
}

// slow makes every later answer of the double take at least wait, as
// under -race on a loaded machine.
func (e *env) slow(wait time.Duration) { e.delay.Store(int64(wait)) }

// fastRetry keeps tests quick: short backoffs. An attempt may take long:
// the double holds every exchange to the description, which is slow
// under -race on a loaded machine.
var fastRetry = github.RetryOptions{AttemptTimeout: 10 * time.Second, Backoff: 20 * time.Millisecond, Attempts: 6, MaxWait: 5 * time.Second}

// faultRetry is fastRetry with short attempts, for tests whose double
// holds calls unanswered (timeouts, lost answers): the client gives up
// on each after 300ms.
var faultRetry = func() github.RetryOptions { o := fastRetry; o.AttemptTimeout = 300 * time.Millisecond; return o }()

// app is a client authenticated as the test App.
func (e *env) app(mod ...func(*github.Options)) *github.Client {
	e.t.Helper()
	o := github.Options{
		Name: "gh", URL: e.url, AppID: appID, AppPrivateKey: testKeyPEM(), Retry: fastRetry,
		PollInterval: time.Hour, Log: slog.New(slog.NewTextHandler(e.log, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	for _, m := range mod {
		m(&o)
	}
	c, err := github.New(o)
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

// pat is a client authenticated with a personal access token the
// double takes (envOptions.pats), as the enterprise scope needs.
func (e *env) pat(token string) *github.Client {
	e.t.Helper()
	c, err := github.New(github.Options{
		Name: "gh", URL: e.url, Token: token, Retry: fastRetry, PollInterval: time.Hour,
		Log: slog.New(slog.NewTextHandler(e.log, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

func (e *env) pool(c *github.Client, o github.PoolOptions) *github.Pool {
	e.t.Helper()
	p, err := c.Pool(o)
	if err != nil {
		e.t.Fatal(err)
	}
	return p
}

// noSecretsLogged fails when the driver's log holds any token, JIT
// configuration or key the double handed out.
func (e *env) noSecretsLogged() {
	e.t.Helper()
	logs := e.log.String()
	for _, tok := range e.d.Tokens() {
		if strings.Contains(logs, tok) {
			e.t.Errorf("an installation token is in the driver's log")
		}
	}
	for name, jit := range e.d.IssuedJITs() {
		if strings.Contains(logs, jit) {
			e.t.Errorf("runner %s's JIT configuration is in the driver's log", name)
		}
	}
}

var guest = forge.GuestOptions{AgentPath: "/home/runner/run.sh", User: "runner", UID: 1001, GID: 1001, FetchInterval: time.Second}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
