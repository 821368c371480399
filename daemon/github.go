package daemon

import (
	"log/slog"

	"github.com/nixos-fireactions/nixos-fireactions/config"
	"github.com/nixos-fireactions/nixos-fireactions/forge"
	"github.com/nixos-fireactions/nixos-fireactions/forge/github"
)

// githubDriver builds the driver of one GitHub: the connection that its
// pools share (credentials, rate-limit budget, the webhook endpoint and
// the queue it feeds).
func githubDriver(fc config.Forge) (forgeDriver, error) {
	c, err := github.New(github.Options{
		Name: fc.Name, URL: fc.URL, CAFile: fc.CAFile, Token: fc.Token,
		AppID: fc.AppID, AppPrivateKey: fc.AppPrivateKey, InstallationID: fc.InstallationID,
		WebhookSecret: fc.WebhookSecret, PollInterval: fc.PollInterval, CancelRuns: fc.CancelRuns,
		Log: slog.Default(),
	})
	if err != nil {
		return nil, err
	}
	return githubForge{c}, nil
}

// githubForge gives a github pool its scope: a Pool of the connection.
type githubForge struct{ *github.Client }

func (g githubForge) scope(p config.Pool, s config.Scope, hostID string) (forge.Forge, error) {
	return g.Pool(github.PoolOptions{
		Scope:  github.Scope{Kind: s.Kind, Org: s.Org, Owner: s.Owner, Repo: s.Repo, Enterprise: s.Enterprise},
		Repos:  p.Repos,
		Labels: p.Labels,
		Group:  p.Runner.Group,
		// The pool's own installation, else the forge's (github.New).
		InstallationID: p.InstallationID,
		Demand:         p.Demand, PoolName: p.Name, HostID: hostID, MaxRunners: p.Max,
	})
}
