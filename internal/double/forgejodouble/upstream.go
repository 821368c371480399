package forgejodouble

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"time"

	runnerv1 "code.gitea.io/actions-proto-go/runner/v1"
	"code.gitea.io/actions-proto-go/runner/v1/runnerv1connect"
	"connectrpc.com/connect"
)

// Upstream is a real Gitea the double stands in front of, for the runner
// protocol Forgejo kept from Gitea: the double answers Forgejo's REST
// calls from Gitea's jobs and runners, registers runners at Gitea as
// Forgejo does (never ephemeral: Forgejo has no ephemeral runners), and
// passes the runners' own calls (/api/actions) through to Gitea, so a
// real runner runs real jobs. Its token must be a Gitea site admin's.
type Upstream struct {
	URL   string
	Token string
	HTTP  *http.Client
}

// NewFront returns a current Forgejo whose jobs, runners and runner
// protocol are up's.
func NewFront(tokens map[string]Token, up Upstream) *Double {
	d := New(tokens)
	d.up = &up
	return d
}

// upstreamProxy passes the runner protocol through to Gitea.
func (u *Upstream) proxy() http.Handler {
	target, _ := url.Parse(u.URL)
	p := httputil.NewSingleHostReverseProxy(target)
	p.Transport = u.HTTP.Transport
	return p
}

// call is one Gitea REST call as its admin.
func (u *Upstream) call(ctx context.Context, method, path string, out any) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(u.URL, "/")+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "token "+u.Token)
	resp, err := u.HTTP.Do(req)
	if err != nil {
		return fmt.Errorf("upstream %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("upstream %s %s: %s: %s", method, path, resp.Status, b)
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(b, out)
}

// sync replaces the double's jobs and runners with Gitea's: its queued
// jobs as waiting, its runners with their scope taken as the instance's
// (the double in front of Gitea serves instance pools).
func (d *Double) sync(ctx context.Context) error {
	var jobs struct {
		Jobs []struct {
			ID     int64    `json:"id"`
			Name   string   `json:"name"`
			Labels []string `json:"labels"`
			RunURL string   `json:"run_url"`
		} `json:"jobs"`
	}
	if err := d.up.call(ctx, http.MethodGet, "/api/v1/admin/actions/jobs?status=queued&limit=50", &jobs); err != nil {
		return err
	}
	d.jobs = d.jobs[:0]
	for _, j := range jobs.Jobs {
		owner, repo := repoOf(j.RunURL)
		d.jobs = append(d.jobs, Job{ID: j.ID, Owner: owner, Repo: repo, Name: j.Name, RunsOn: j.Labels, Status: "waiting"})
	}
	var runners struct {
		Runners []struct {
			ID     int64  `json:"id"`
			Name   string `json:"name"`
			Status string `json:"status"`
			Busy   bool   `json:"busy"`
		} `json:"runners"`
	}
	if err := d.up.call(ctx, http.MethodGet, "/api/v1/admin/actions/runners?limit=50", &runners); err != nil {
		return err
	}
	old := d.runners
	d.runners = map[int64]*runner{}
	for _, r := range runners.Runners {
		status := "idle"
		switch {
		case r.Status == "offline":
			status = "offline"
		case r.Busy:
			status = "active"
		}
		scope, uuid := "instance", ""
		if o, ok := old[r.ID]; ok {
			scope, uuid = o.scope, o.uuid
		}
		d.runners[r.ID] = &runner{scope: scope, uuid: uuid, name: r.Name, status: status}
	}
	return nil
}

// repoOf is "owner", "owner/repo" of a Gitea run URL
// (…/api/v1/repos/OWNER/REPO/actions/runs/N).
func repoOf(runURL string) (string, string) {
	_, rest, ok := strings.Cut(runURL, "/repos/")
	if !ok {
		return "", ""
	}
	parts := strings.SplitN(rest, "/", 3)
	if len(parts) < 2 {
		return "", ""
	}
	return parts[0], parts[0] + "/" + parts[1]
}

// registerUpstream registers the runner at Gitea with Gitea's own
// registration token, not ephemeral.
func (d *Double) registerUpstream(ctx context.Context, msg *runnerv1.RegisterRequest) (*runnerv1.Runner, error) {
	var tok struct {
		Token string `json:"token"`
	}
	if err := d.up.call(ctx, http.MethodPost, "/api/v1/admin/actions/runners/registration-token", &tok); err != nil {
		return nil, err
	}
	client := runnerv1connect.NewRunnerServiceClient(d.up.HTTP, strings.TrimRight(d.up.URL, "/")+"/api/actions")
	req := &runnerv1.RegisterRequest{Name: msg.Name, Token: tok.Token, Version: msg.Version, Labels: msg.Labels, AgentLabels: msg.AgentLabels, CustomLabels: msg.CustomLabels}
	resp, err := client.Register(ctx, connect.NewRequest(req))
	if err != nil {
		return nil, err
	}
	return resp.Msg.GetRunner(), nil
}

// deleteUpstream removes a runner at Gitea.
func (d *Double) deleteUpstream(ctx context.Context, id int64) error {
	return d.up.call(ctx, http.MethodDelete, fmt.Sprintf("/api/v1/admin/actions/runners/%d", id), nil)
}
