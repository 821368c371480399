package gitlab

import (
	"context"
	"fmt"

	"github.com/nixos-fireactions/nixos-fireactions/forge"
)

var _ forge.Retirer = (*Forge)(nil)

// Retire implements forge.Retirer by deleting the runner at GitLab once
// its one job has started. The job runs as the user that owns the
// runner's config.toml (gitlab-runner's shell executor cannot run it as
// another user), so a job can read the runner's glrt- token; GitLab
// refuses a deleted runner's token on POST /jobs/request (403), while the
// running job's updates and trace use the job's own token and go on.
func (f *Forge) Retire(ctx context.Context, r forge.RunnerRef) error {
	if err := f.Remove(ctx, r); err != nil {
		return fmt.Errorf("gitlab: retire runner once its job started: %w", err)
	}
	return nil
}
