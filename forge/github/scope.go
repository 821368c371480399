package github

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	gh "github.com/google/go-github/v93/github"
)

// Scope is where a pool's runners register.
type Scope struct {
	Kind       string // "org", "repo" or "enterprise"
	Org        string
	Owner      string
	Repo       string
	Enterprise string
}

func (s Scope) String() string {
	if k, ok := scopeKinds[s.Kind]; ok {
		return s.Kind + ":" + k.name(s)
	}
	return s.Kind
}

// groupRule is how a scope's runner groups are given.
type groupRule int

const (
	groupsByName groupRule = iota // a name, looked up, or a numeric id
	groupsByID                    // a numeric id only: GitHub's description has no lookup
	groupsNone                    // the scope has no runner groups
)

// scopeKind is what one kind of scope means at GitHub: the one place a
// kind is described, so that adding one touches nothing else.
type scopeKind struct {
	// name is the scope's name after "KIND:"; "" when the scope lacks it.
	name func(Scope) string
	// api is the scope's path under the API base, without a slash at
	// either end: its runners are under api/actions/runners.
	api func(Scope) string
	// installation is the path of the App's installation for the scope
	// (api/installation); "" when there is none to ask for (an
	// enterprise: its runner API takes no App token).
	installation func(Scope) string
	// ownRepo is the repository the scope is (a repo scope), else "".
	ownRepo func(Scope) string
	// owns reports whether a job of repo (OWNER/NAME), from a delivery
	// naming enterprise ("" when none), is the scope's by its kind (a
	// pool's repos are its own besides).
	owns   func(s Scope, repo, enterprise string) bool
	groups groupRule
	// appTokens: GitHub takes App installation tokens on the scope's
	// runner API (x-github.enabledForGitHubApps).
	appTokens bool
	// needs is what a credential must hold to manage the scope's
	// runners, as GitHub's description of each runner operation says.
	needs string
}

var scopeKinds = map[string]scopeKind{
	"org": {
		name:         func(s Scope) string { return s.Org },
		api:          func(s Scope) string { return "orgs/" + url.PathEscape(s.Org) },
		installation: func(s Scope) string { return "orgs/" + url.PathEscape(s.Org) + "/installation" },
		ownRepo:      func(Scope) string { return "" },
		owns: func(s Scope, repo, _ string) bool {
			owner, _, _ := strings.Cut(repo, "/")
			return strings.EqualFold(owner, s.Org)
		},
		groups: groupsByName, appTokens: true,
		needs: "a classic token with admin:org, or an App with the organization permission Self-hosted runners: read and write",
	},
	"repo": {
		name: func(s Scope) string {
			if s.Owner == "" || s.Repo == "" {
				return ""
			}
			return s.Owner + "/" + s.Repo
		},
		api: func(s Scope) string { return "repos/" + url.PathEscape(s.Owner) + "/" + url.PathEscape(s.Repo) },
		installation: func(s Scope) string {
			return "repos/" + url.PathEscape(s.Owner) + "/" + url.PathEscape(s.Repo) + "/installation"
		},
		ownRepo: func(s Scope) string { return s.Owner + "/" + s.Repo },
		owns:    func(Scope, string, string) bool { return false },
		groups:  groupsNone, appTokens: true,
		needs: "a classic token with repo, or an App with the repository permission Administration: read and write",
	},
	"enterprise": {
		name:         func(s Scope) string { return s.Enterprise },
		api:          func(s Scope) string { return "enterprises/" + url.PathEscape(s.Enterprise) },
		installation: func(Scope) string { return "" },
		ownRepo:      func(Scope) string { return "" },
		owns: func(s Scope, _, enterprise string) bool {
			return enterprise != "" && strings.EqualFold(enterprise, s.Enterprise)
		},
		groups: groupsByID, appTokens: false,
		needs: "a classic token with manage_runners:enterprise",
	},
}

// kindOf is the scope's kind, checked: it names what its kind needs.
func kindOf(s Scope) (scopeKind, error) {
	k, ok := scopeKinds[s.Kind]
	if !ok {
		return scopeKind{}, fmt.Errorf("github: scope kind %q: want org, repo or enterprise", s.Kind)
	}
	if k.name(s) == "" {
		return scopeKind{}, fmt.Errorf("github: %s scope without its name", s.Kind)
	}
	return k, nil
}

// refused is err, from the scope's runner API, with what the scope
// needs when GitHub refused the credential: a token without the scope is
// answered 404 (GitHub does not tell it the runners exist), an App
// without the permission 403; so is a scope that does not exist, or a
// user who is not its admin.
// Said once: an error wrapped already (a registration's listing of a
// taken name) is returned as it is.
func (p *Pool) refused(err error) error {
	var said *refusal
	if errors.As(err, &said) || !isStatus(err, http.StatusNotFound) && !isStatus(err, http.StatusForbidden) {
		return err
	}
	return &refusal{err: err, hint: fmt.Sprintf("GitHub answers so a credential that may not manage the runners of %s, or when %s does not exist; managing its runners takes %s", p.scope, p.scope, p.kind.needs)}
}

// refusal is a refused call's error with what the scope needs (refused).
type refusal struct {
	err  error
	hint string
}

func (r *refusal) Error() string { return r.err.Error() + " (" + r.hint + ")" }
func (r *refusal) Unwrap() error { return r.err }

// runnersPath is the path of the pool's runners under the API base, with
// more segments appended.
func (p *Pool) runnersPath(more ...string) string {
	return strings.Join(append([]string{p.kind.api(p.scope), "actions/runners"}, more...), "/")
}

// call sends one request to the pool's GitHub and decodes the answer into
// out (nil: none).
func (p *Pool) call(ctx context.Context, method, path string, body, out any) (*gh.Response, error) {
	req, err := p.gh.NewRequest(ctx, method, path, body)
	if err != nil {
		return nil, err
	}
	return p.gh.Do(req, out)
}

// listPage is one page of the scope's runners, those named name if set.
func (p *Pool) listPage(ctx context.Context, name string, page int) (*gh.Runners, *gh.Response, error) {
	q := url.Values{"per_page": {"100"}}
	if name != "" {
		q.Set("name", name)
	}
	if page > 0 {
		q.Set("page", strconv.Itoa(page))
	}
	rs := new(gh.Runners)
	resp, err := p.call(ctx, http.MethodGet, p.runnersPath()+"?"+q.Encode(), nil, rs)
	return rs, resp, err
}
