package gitea

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/forge"
)

// Flavors of the server a gitea driver speaks to. Forgejo forked Gitea and
// keeps its runner protocol, but its REST calls for runners differ:
// the registration token is a GET (instance scope at
// /api/v1/admin/runners/registration-token), demand is
// …/runners/jobs?labels= answering a plain array of waiting and running
// jobs, and there is no /actions/jobs?status=queued.
const (
	FlavorGitea   = "gitea"
	FlavorForgejo = "forgejo"
	FlavorAuto    = "auto" // asked of the server once, then kept
)

// forgejoVersionPath answers on Forgejo only (Gitea has no /api/forgejo);
// /api/v1/version answers on both.
const forgejoVersionPath = "/api/forgejo/v1/version"

// flavorProbe knows which flavor a driver's server is: set in the
// configuration, or detected at first use and kept. A failed detection is
// not kept, so the next call asks again.
type flavorProbe struct {
	base string
	http *http.Client

	mu  sync.Mutex
	got string
}

func newFlavorProbe(base, flavor string, c *http.Client) (*flavorProbe, error) {
	switch flavor {
	case "", FlavorAuto:
		return &flavorProbe{base: base, http: c}, nil
	case FlavorGitea, FlavorForgejo:
		return &flavorProbe{base: base, http: c, got: flavor}, nil
	}
	return nil, fmt.Errorf("gitea: flavor %q is not gitea, forgejo or auto", flavor)
}

// flavor returns the server's flavor, asking the server the first time
// with the API token: a Forgejo that requires sign-in
// (REQUIRE_SIGNIN_VIEW) answers no anonymous API call, its version's
// neither.
func (p *flavorProbe) flavor(ctx context.Context, token string) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.got != "" {
		return p.got, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.base+forgejoVersionPath, nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "token "+token)
	req.Header.Set("Accept", "application/json")
	resp, err := p.http.Do(req)
	if err != nil {
		return "", fmt.Errorf("gitea: detect flavor: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	switch {
	case resp.StatusCode == http.StatusNotFound:
		p.got = FlavorGitea
	case resp.StatusCode == http.StatusOK:
		var v struct {
			Version string `json:"version"`
		}
		if err := json.Unmarshal(body, &v); err != nil || v.Version == "" {
			return "", fmt.Errorf("gitea: detect flavor: GET %s: 200 without a version: %.200q", forgejoVersionPath, body)
		}
		p.got = FlavorForgejo
	default:
		return "", fmt.Errorf("gitea: detect flavor: GET %s: %s", forgejoVersionPath, resp.Status)
	}
	return p.got, nil
}

// forgejo reports whether the scope's server is Forgejo.
func (f *Forge) forgejo(ctx context.Context) (bool, error) {
	fl, err := f.probe.flavor(ctx, f.token)
	return fl == FlavorForgejo, err
}

// forgejoRunners are where Forgejo keeps a scope's registration token and
// job search, tried in order. The instance's moved in Forgejo's runner
// API (after v12) from /admin/runners, which stays as deprecated.
func (s Scope) forgejoRunners() []string {
	p, _ := s.apiPrefix()
	if s.Kind == "instance" {
		return []string{p + "/actions/runners", p + "/runners"}
	}
	return []string{p + "/actions/runners"}
}

// forgejoGet GETs suffix under the scope's runner paths: the first that
// the server has (does not answer 404).
func (f *Forge) forgejoGet(ctx context.Context, suffix string, out any) error {
	var err error
	for _, p := range f.runnersPaths {
		if err = f.do(ctx, http.MethodGet, p+suffix, out); !errors.Is(err, errNotFound) {
			return err
		}
	}
	return err
}

// forgejoJob is Forgejo's ActionRunJob (swagger definitions/ActionRunJob).
type forgejoJob struct {
	ID     int64    `json:"id"`
	RepoID int64    `json:"repo_id"`
	Name   string   `json:"name"`
	RunsOn []string `json:"runs_on"`
	Status string   `json:"status"`
}

// forgejoQueuedJobs lists the scope's jobs waiting for a runner that the
// pool's labels can take. Forgejo answers only jobs whose runs-on labels
// are all among those asked, waiting or running, in one unpaginated array.
func (f *Forge) forgejoQueuedJobs(ctx context.Context) ([]forge.Job, error) {
	if len(f.labels) == 0 {
		return nil, errors.New("gitea: list queued jobs on forgejo: the scope has no labels to ask for")
	}
	q := url.Values{"labels": {strings.Join(f.labels, ",")}}
	var list []forgejoJob
	if err := f.forgejoGet(ctx, "/jobs?"+q.Encode(), &list); err != nil {
		return nil, fmt.Errorf("gitea: list queued jobs on forgejo: %w", err)
	}
	var jobs []forge.Job
	for _, j := range list {
		if j.Status != "waiting" {
			continue
		}
		jobs = append(jobs, forge.Job{
			ID:     strconv.FormatInt(j.ID, 10),
			Labels: j.RunsOn,
			Repo:   "repo:" + strconv.FormatInt(j.RepoID, 10),
		})
	}
	return jobs, nil
}

// Forgejo's runner: one-job fetches one task, runs it and exits, and says
// "declared successfully" where act_runner says "declare successfully".
const (
	forgejoReadyLine = "declared successfully"
	forgejoOneJob    = "one-job"
)

// forgejoRunner is Forgejo's ActionRunner (swagger definitions/ActionRunner).
type forgejoRunner struct {
	ID     int64  `json:"id"`
	Name   string `json:"name"`
	Status string `json:"status"` // offline, idle, active
}

// forgejoRunnerList lists the scope's runners that owner owns, removing
// suspects as Runners does on Gitea (reports). Forgejo
// answers a plain array, paged; Forgejo before the runner API (v12 and
// older) answers 404, and then there is nothing this host can list, so
// nothing to sweep: the runners it registered stay, offline, until an
// admin removes them. A current Forgejo answers 404 too for an org or
// repo that does not exist (or a repo the token cannot read), which is
// an error: scopeReadable tells the two apart.
func (f *Forge) forgejoRunnerList(ctx context.Context, owner forge.Owner) ([]forge.RunnerState, error) {
	return f.walkRunners(ctx, owner, func(page int) ([]forge.RunnerState, bool, error) {
		var list []forgejoRunner
		path := fmt.Sprintf("%s/actions/runners?limit=%d&page=%d", f.prefix, pageSize, page)
		if err := f.do(ctx, http.MethodGet, path, &list); err != nil {
			if errors.Is(err, errNotFound) && page == 1 {
				if err := f.scopeReadable(ctx); err != nil {
					return nil, false, fmt.Errorf("gitea: list runners on forgejo: %w", err)
				}
				return nil, false, nil
			}
			return nil, false, fmt.Errorf("gitea: list runners on forgejo: %w", err)
		}
		rs := make([]forge.RunnerState, 0, len(list))
		for _, r := range list {
			rs = append(rs, runnerState(r.ID, r.Name, r.Status, r.Status == "active"))
		}
		return rs, len(list) >= pageSize, nil
	})
}

// scopeRecheck is how long a scope scopeReadable found is taken as
// still there: a v12 server's every listing is a 404, and every pass
// (2 s by default) lists; an org or repo deleted meanwhile is found at
// most this late.
const scopeRecheck = 5 * time.Minute

// scopeReadable checks that the scope's org or repo exists and the token
// can see it: Forgejo serves them at the scope's own prefix
// (GET /orgs/{org}, GET /repos/{owner}/{repo}; 404 for one that is
// missing or hidden from the token's user). The instance always is.
func (f *Forge) scopeReadable(ctx context.Context) error {
	if f.scope.Kind == "instance" {
		return nil
	}
	f.mu.Lock()
	fresh := !f.scopeReadAt.IsZero() && time.Since(f.scopeReadAt) < scopeRecheck
	f.mu.Unlock()
	if fresh {
		return nil
	}
	err := f.do(ctx, http.MethodGet, f.prefix, nil)
	if err == nil {
		f.mu.Lock()
		f.scopeReadAt = time.Now()
		f.mu.Unlock()
	}
	if errors.Is(err, errNotFound) {
		name := f.scope.Org
		if f.scope.Kind == "repo" {
			name = f.scope.Owner + "/" + f.scope.Repo
		}
		return fmt.Errorf("%s %s not found, or this token cannot read it: %w", f.scope.Kind, name, err)
	}
	return err
}
