package config

import (
	"errors"
	"strconv"
	"strings"
	"time"
)

// GitHub settings that need more than a field: polling defaults and the
// self-hosted label every GitHub runner offers.

// Polling periods of a github forge when poll_interval is left out: often
// without webhooks (polling is the only demand), rarely with them
// (polling only heals missed deliveries).
const (
	defaultGitHubCancelRuns  = CancelRunsForce
	defaultGitHubPoll        = 30 * time.Second
	defaultGitHubPollWebhook = 2 * time.Minute
	minGitHubPoll            = time.Second
)

// What a github forge's cancel_runs may say.
const (
	CancelRunsForce  = "force"
	CancelRunsCancel = "cancel"
	CancelRunsOff    = "off"
)

// What a github pool's demand may say.
const (
	DemandScaleSet = "scaleset"
	DemandWebhooks = "webhooks"
)

// selfHosted is the label GitHub gives every self-hosted runner; a job's
// runs-on may ask for it.
const selfHosted = "self-hosted"

// deriveGitHub fills a github forge's poll_interval and cancel_runs, and adds self-hosted
// to its pools' labels, where the file leaves them out: every runner the
// pool registers offers it (GitHub's rule), so jobs asking for it match.
func deriveGitHub(c *Config) {
	github := map[string]bool{}
	for i := range c.Forges {
		f := &c.Forges[i]
		if f.Type != "github" {
			continue
		}
		github[f.Name] = true
		if f.CancelRuns == "" {
			f.CancelRuns = defaultGitHubCancelRuns
		}
		if f.PollInterval == 0 {
			f.PollInterval = defaultGitHubPoll
			if f.WebhookSecretFile != "" {
				f.PollInterval = defaultGitHubPollWebhook
			}
		}
	}
	for i := range c.Pools {
		p := &c.Pools[i]
		if github[p.Forge] && p.Demand == "" {
			if sc, err := ParseScope(p.Scope); err == nil {
				p.Demand = DemandScaleSet
				if sc.Kind == ScopeRepo {
					p.Demand = DemandWebhooks
				}
			}
		}
		if !github[p.Forge] || len(p.Labels) == 0 {
			continue // no labels is an error validation reports
		}
		has := false
		for _, l := range p.Labels {
			has = has || strings.EqualFold(l, selfHosted)
		}
		if !has {
			p.Labels = append(p.Labels, selfHosted)
		}
	}
}

// pollInterval checks poll_interval: github only, at least a second.
func (v *validator) pollInterval(ff field, fo *Forge) {
	err := onlyFor(fo.PollInterval != 0, "github", fo.Type, "forges")
	if err == nil && fo.Type == "github" {
		err = durationAtLeast(fo.PollInterval, minGitHubPoll)
	}
	v.check(rule{ff.child("poll_interval"), err})
}

// cancelRuns checks cancel_runs: github only, one of its three words.
func (v *validator) cancelRuns(ff field, fo *Forge) {
	err := onlyFor(fo.CancelRuns != "", "github", fo.Type, "forges")
	if err == nil && fo.Type == "github" {
		err = oneOf(fo.CancelRuns, CancelRunsForce, CancelRunsCancel, CancelRunsOff)
	}
	v.check(rule{ff.child("cancel_runs"), err})
}

// demand checks a pool's demand: github only, scaleset or webhooks.
func (v *validator) demand(f field, p *Pool, typ string) {
	err := onlyFor(p.Demand != "", "github", typ, "pools")
	if err == nil && typ == "github" && p.Demand != "" {
		err = oneOf(p.Demand, DemandScaleSet, DemandWebhooks)
	}
	v.check(rule{f, err})
}

// runnerGroupScope checks a github pool's runner.group against its scope:
// repositories have no runner groups, and an enterprise's groups can only
// be given by id (GitHub's API description has no way to look them up).
func (v *validator) runnerGroupScope(f field, p *Pool, typ string) {
	if typ != "github" || p.Runner.Group == "" {
		return
	}
	sc, err := ParseScope(p.Scope)
	if err != nil {
		return // the scope is the problem
	}
	id, numErr := strconv.ParseInt(p.Runner.Group, 10, 64)
	switch {
	case sc.Kind == ScopeRepo:
		err = errorf("only with an org or enterprise scope: repositories have no runner groups")
	case sc.Kind == ScopeEnterprise && (numErr != nil || id <= 0):
		err = errorf("%q: an enterprise scope needs the runner group's numeric id", p.Runner.Group)
	}
	v.check(rule{f, err})
}

// githubPools checks what a github pool needs of its forge: a credential
// GitHub takes at the pool's scope, an installation only with an App,
// and a source of demand.
func (v *validator) githubPools(f field, pools []Pool, forges []Forge) {
	byName := map[string]*Forge{}
	for i := range forges {
		if _, dup := byName[forges[i].Name]; !dup {
			byName[forges[i].Name] = &forges[i]
		}
	}
	for i := range pools {
		p := &pools[i]
		pf := f.index(i).named(p.Name)
		fo := byName[p.Forge]
		if fo == nil {
			continue // the forge reference is the problem
		}
		if fo.Type != "github" {
			v.check(rule{pf.child("installation_id"), onlyFor(p.InstallationID != 0, "github", fo.Type, "pools")})
			continue
		}
		app := fo.AppID != 0 || fo.AppPrivateKeyFile != ""
		v.check(rule{pf.child("installation_id"), errors.Join(githubID(p.InstallationID, ""),
			onlyWith(p.InstallationID != 0 && !app, "the forge's app_id (a GitHub App)"))})
		sc, err := ParseScope(p.Scope)
		if err != nil {
			continue // the scope is the problem
		}
		if sc.Kind == ScopeEnterprise && app {
			v.check(rule{pf.child("scope"), errorf("%s: GitHub refuses GitHub App tokens on the enterprise runner API "+
				"(its operations are not enabled for GitHub Apps): give forge %q a personal access token (classic) "+
				"with the manage_runners:enterprise scope in token_file or token_env instead of app_id", p.Scope, fo.Name)})
		}
		if !githubDemandSource(p, sc, fo) {
			v.check(rule{pf, errorf("no source of demand: this %s pool with demand: webhooks would never learn of a job; set the forge's "+
				"webhook_secret_file (workflow_job webhooks), list the repositories to poll in repos, or use demand: scaleset", sc.Kind)})
		}
	}
}

// githubDemandSource reports whether anything tells a github pool of its
// queued jobs: a scale set (demand: scaleset, the default at org and
// enterprise scope); else a repo pool polls its repository, and an org or
// enterprise pool needs its forge's webhooks or repositories to poll.
func githubDemandSource(p *Pool, sc Scope, fo *Forge) bool {
	scaleSet := p.Demand == DemandScaleSet || p.Demand == "" && sc.Kind != ScopeRepo
	return scaleSet || sc.Kind == ScopeRepo || fo.WebhookSecretFile != "" || len(p.Repos) > 0
}
