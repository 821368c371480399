package github

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"

	"github.com/bradleyfalzon/ghinstallation/v2"
	ghinst "github.com/google/go-github/v88/github" // ghinstallation's version
	gh "github.com/google/go-github/v93/github"
)

// installation authenticates a pool's calls as the GitHub App's
// installation for its scope. The installation is looked up from the
// scope (or given), and its token is created, and refreshed a minute
// before it expires, by ghinstallation. When GitHub says the installation
// is gone (404 creating a token: the App was uninstalled or reinstalled)
// or the token is no longer good (401), the cached installation is
// dropped and looked up again once.
type installation struct {
	c     *Client
	scope Scope
	fixed int64 // installation_id from the configuration; 0: look it up
	log   *slog.Logger

	mu     sync.Mutex
	id     int64
	tr     *ghinstallation.Transport
	budget *retryTransport // the installation's rate budget, once known
}

// remaining is the installation's budget left, as GitHub last said; -1
// before any answer.
func (in *installation) remaining() int {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.budget == nil {
		return -1
	}
	return in.budget.remaining()
}

// byCredential sends each call on its credential's rate budget: the
// App's JWT (creating installation tokens: "Bearer") on the App's, the
// installation token's on the installation's.
type byCredential struct{ app, installation http.RoundTripper }

func (b byCredential) RoundTrip(req *http.Request) (*http.Response, error) {
	if scheme, _, _ := strings.Cut(req.Header.Get("Authorization"), " "); strings.EqualFold(scheme, "Bearer") {
		return b.app.RoundTrip(req)
	}
	return b.installation.RoundTrip(req)
}

// RoundTrip implements http.RoundTripper.
func (in *installation) RoundTrip(req *http.Request) (*http.Response, error) {
	for attempt := 0; ; attempt++ {
		tr, err := in.transport(req.Context())
		if err != nil {
			return nil, err
		}
		r := req
		if attempt > 0 {
			if r, err = rewound(req); err != nil {
				return nil, err
			}
		}
		resp, err := tr.RoundTrip(r)
		why := stale(resp, err)
		if why == "" || attempt > 0 || (req.Body != nil && req.GetBody == nil) {
			return resp, err
		}
		if resp != nil {
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
		}
		in.forget(tr, why)
	}
}

// stale says why an answer means the cached installation or its token is
// no good, or "".
func stale(resp *http.Response, err error) string {
	var he *ghinstallation.HTTPError
	if errors.As(err, &he) && he.Response != nil {
		he.Response.Body.Close()
		switch he.Response.StatusCode {
		case http.StatusNotFound:
			return "the installation is gone (404 creating a token)"
		case http.StatusUnauthorized:
			return "creating an installation token was refused (401)"
		}
	}
	if err == nil && resp.StatusCode == http.StatusUnauthorized {
		return "the installation token was refused (401)"
	}
	return ""
}

// transport returns the installation's transport, looking the
// installation up first when needed.
func (in *installation) transport(ctx context.Context) (*ghinstallation.Transport, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.tr != nil {
		return in.tr, nil
	}
	id := in.fixed
	if id == 0 {
		var err error
		if id, err = in.lookup(ctx); err != nil {
			return nil, err
		}
		in.log.Info("github app installation found", "installation", id)
	}
	// Each installation has its own apps transport: ghinstallation writes
	// to it while refreshing a token. Its calls spend its own budget;
	// creating its tokens, the App's.
	budget := in.c.installationBudget(id)
	atr, err := ghinstallation.NewAppsTransport(byCredential{app: in.c.retry, installation: budget}, in.c.appID, in.c.key)
	if err != nil {
		return nil, fmt.Errorf("github: app private key: %w", err)
	}
	tr := ghinstallation.NewFromAppsTransport(atr, id)
	tr.BaseURL = strings.TrimSuffix(in.c.base.String(), "/")
	// An empty object: GitHub's description wants one, and without
	// options ghinstallation sends null.
	tr.InstallationTokenOptions = &ghinst.InstallationTokenOptions{}
	in.id, in.tr, in.budget = id, tr, budget
	return tr, nil
}

// forget drops the installation (unless another call already replaced
// it), so the next call looks it up and creates a token again.
func (in *installation) forget(tr *ghinstallation.Transport, why string) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.tr != tr {
		return
	}
	in.log.Warn("github app installation dropped; looking it up again", "installation", in.id, "reason", why)
	in.tr, in.id = nil, 0
}

// lookup finds the App's installation for the scope.
func (in *installation) lookup(ctx context.Context) (int64, error) {
	path := scopeKinds[in.scope.Kind].installation(in.scope)
	if path == "" {
		return 0, fmt.Errorf("github: scope %s: %w", in.scope, ErrEnterpriseNeedsPAT)
	}
	inst := new(gh.Installation)
	req, err := in.c.apps.NewRequest(ctx, http.MethodGet, path, nil)
	if err == nil {
		_, err = in.c.apps.Do(req, inst)
	}
	if err != nil {
		return 0, fmt.Errorf("github: find the app installation for %s: %w", in.scope, err)
	}
	if inst.GetID() == 0 {
		return 0, fmt.Errorf("github: find the app installation for %s: answer has no id", in.scope)
	}
	return inst.GetID(), nil
}

// maxPages bounds list walks, so a misbehaving server cannot loop us.
const maxPages = 50
