package gitlab

import (
	"context"
	"fmt"
	"strconv"

	"github.com/nixos-fireactions/nixos-fireactions/forge"
)

var _ forge.Retirer = (*Forge)(nil)

// Retire implements forge.Retirer by deleting the runner at GitLab once
// its one job has started. The job runs as the user that owns the
// runner's config.toml (gitlab-runner's shell executor cannot run it as
// another user), so a job can read the runner's glrt- token; GitLab
// refuses a deleted runner's token on POST /jobs/request (403), while the
// running job's updates and trace use the job's own token and go on.
//
// First, unless the runner's memo holds them already (LearnJob, which
// the pool calls before it retires a runner), it asks GitLab which job
// the runner took (GET /runners/:id/jobs) and keeps the answer for
// FailJob, in memory: once the runner is deleted GitLab
// answers 404 for its jobs and nulls their runner, so a job could no
// longer be tied to this VM's runner. A failed listing does not hold the
// deletion up: a token that takes more jobs is worse than a job GitLab
// ends by its own clean-up.
func (f *Forge) Retire(ctx context.Context, r forge.RunnerRef) error {
	if id, err := strconv.ParseInt(r.ID, 10, 64); err == nil {
		f.mu.Lock()
		_, known := f.taken[id]
		f.mu.Unlock()
		if _, memo := jobsIn(r.Memo); !known && !memo {
			f.learnJobs(ctx, id, r.Name)
		}
	}
	if err := f.remove(ctx, r); err != nil {
		return fmt.Errorf("gitlab: retire runner once its job started: %w", err)
	}
	return nil
}
