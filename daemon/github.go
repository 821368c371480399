package daemon

import (
	"log/slog"

	"github.com/nixos-fireactions/nixos-fireactions/config"
	"github.com/nixos-fireactions/nixos-fireactions/forge"
	"github.com/nixos-fireactions/nixos-fireactions/forge/github"
)

// githubDriver returns the factory of github pools. Pools naming the same
// forge share one connection (credentials, rate-limit budget, the webhook
// endpoint and the queue it feeds), so the factory keeps the connections
// it made.
func githubDriver() forgeFactory {
	conns := map[string]*github.Client{}
	return func(fc config.Forge, p config.Pool, s config.Scope) (forge.Forge, error) {
		c, ok := conns[fc.Name]
		if !ok {
			var err error
			c, err = github.New(github.Options{
				Name: fc.Name, URL: fc.URL, CAFile: fc.CAFile, Token: fc.Token,
				AppID: fc.AppID, AppPrivateKey: fc.AppPrivateKey, InstallationID: fc.InstallationID,
				WebhookSecret: fc.WebhookSecret, PollInterval: fc.PollInterval, CancelRuns: fc.CancelRuns,
				Log: slog.Default(),
			})
			if err != nil {
				return nil, err
			}
			conns[fc.Name] = c
		}
		return c.Pool(github.PoolOptions{
			Scope:  github.Scope{Kind: s.Kind, Org: s.Org, Owner: s.Owner, Repo: s.Repo, Enterprise: s.Enterprise},
			Repos:  p.Repos,
			Labels: p.Labels,
			Group:  p.Runner.Group,
		})
	}
}
