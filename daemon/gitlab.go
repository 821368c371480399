package daemon

import (
	"log/slog"

	"github.com/nixos-fireactions/nixos-fireactions/config"
	"github.com/nixos-fireactions/nixos-fireactions/forge"
	"github.com/nixos-fireactions/nixos-fireactions/forge/gitlab"
)

// gitlabDriver builds the GitLab driver for one pool's scope. The factory
// gets no logger: the driver logs through slog's default logger, which
// serve sets to the orchestrator's.
func gitlabDriver(fc config.Forge, p config.Pool, s config.Scope) (forge.Forge, error) {
	scope := gitlab.Scope{Kind: s.Kind, Path: s.Group}
	if s.Kind == config.ScopeProject {
		scope.Path = s.Project
	}
	r := p.Runner
	return gitlab.New(gitlab.Options{
		URL: fc.URL, GuestURL: fc.GuestURL, Token: fc.Token, CAFile: fc.CAFile,
		WebhookSecret: fc.WebhookSecret, Scope: scope, Pool: p.Name,
		Runner: gitlab.RunnerSettings{
			RunUntagged: r.RunUntagged, Locked: r.Locked == nil || *r.Locked, AccessLevel: r.AccessLevel,
			MaximumTimeout: r.MaximumTimeout, Executor: r.Executor,
		},
		BootTimeout: p.Timeouts.Boot,
		Log:         slog.Default().With("forge", fc.Name, "pool", p.Name),
	})
}
