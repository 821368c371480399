package daemon

import (
	"log/slog"

	"github.com/nixos-fireactions/nixos-fireactions/config"
	"github.com/nixos-fireactions/nixos-fireactions/forge"
	"github.com/nixos-fireactions/nixos-fireactions/forge/gitlab"
)

// gitlabDriver builds the driver of one GitLab: the API client and the
// webhook endpoint its pools share. The factory gets no logger: the
// driver logs through slog's default logger, which serve sets to the
// orchestrator's.
func gitlabDriver(fc config.Forge) (forgeDriver, error) {
	d, err := gitlab.NewDriver(fc.Name, gitlab.Options{
		URL: fc.URL, GuestURL: fc.GuestURL, Token: fc.Token, CAFile: fc.CAFile,
		WebhookSecret: fc.WebhookSecret,
		Log:           slog.Default().With("forge", fc.Name),
	})
	if err != nil {
		return nil, err
	}
	return gitlabForge{d}, nil
}

// gitlabForge gives a gitlab pool its scope.
type gitlabForge struct{ *gitlab.Driver }

func (g gitlabForge) scope(p config.Pool, s config.Scope, hostID string) (forge.Forge, error) {
	scope := gitlab.Scope{Kind: s.Kind, Path: s.Group}
	if s.Kind == config.ScopeProject {
		scope.Path = s.Project
	}
	r := p.Runner
	return g.Scope(gitlab.ScopeOptions{
		Scope: scope, Pool: p.Name,
		Runner: gitlab.RunnerSettings{
			RunUntagged: r.RunUntagged, Locked: r.Locked == nil || *r.Locked, AccessLevel: r.AccessLevel,
			MaximumTimeout: r.MaximumTimeout, Executor: r.Executor, DefaultImage: r.DefaultImage,
		},
		BootTimeout: p.Timeouts.Boot,
		Log:         slog.Default().With("forge", p.Forge, "pool", p.Name),
	})
}
