package gitlab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	gl "gitlab.com/gitlab-org/api/client-go/v2"

	"github.com/nixos-fireactions/nixos-fireactions/forge"
)

// maintenanceNote tells GitLab's users what these runners are.
const maintenanceNote = "Ephemeral fireactions runner: takes one job in its own microVM and is deleted when the VM ends."

// Register implements forge.Forge: POST /user/runners creates a runner of
// the scope's type for one VM, and the guest plan carries only that
// runner's own token.
func (f *Forge) Register(ctx context.Context, spec forge.RunnerSpec) (*forge.Runner, error) {
	id, err := f.scopeRef(ctx)
	if err != nil {
		return nil, err
	}
	typ := f.runnerType()
	desc := fmt.Sprintf("%s pool=%s", spec.Name, f.o.Pool)
	tags := append([]string{}, spec.Labels...)
	opts := &gl.CreateUserRunnerOptions{
		RunnerType:      &typ,
		Description:     &desc,
		Paused:          gl.Ptr(false),
		Locked:          gl.Ptr(f.o.Runner.Locked),
		RunUntagged:     gl.Ptr(f.o.Runner.RunUntagged),
		TagList:         &tags,
		AccessLevel:     gl.Ptr(f.o.Runner.AccessLevel),
		MaintenanceNote: gl.Ptr(maintenanceNote),
	}
	if s := int64(f.o.Runner.MaximumTimeout / time.Second); s > 0 {
		opts.MaximumTimeout = &s
	}
	switch f.o.Scope.Kind {
	case ScopeGroup:
		opts.GroupID = &id
	case ScopeProject:
		opts.ProjectID = &id
	}
	run, _, err := f.api.Users.CreateUserRunner(opts, gl.WithContext(ctx))
	if err != nil {
		if ambiguous(err) {
			// GitLab may have created it and the answer got lost: look
			// for it now, and at every listing for a while.
			f.suspect(spec.Name)
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), f.o.RequestTimeout)
			f.sweep(sctx, spec.Name)
			cancel()
		}
		return nil, fmt.Errorf("gitlab: create runner %s: %w", spec.Name, err)
	}
	ref := forge.RunnerRef{ID: strconv.FormatInt(run.ID, 10), Name: spec.Name}
	f.mu.Lock()
	f.tokens[run.ID] = run.Token
	f.mu.Unlock()
	fail := func(err error) (*forge.Runner, error) {
		// Never leave a runner behind for a VM that will not run.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), f.o.RequestTimeout)
		defer cancel()
		if rerr := f.Remove(rctx, ref); rerr != nil {
			f.suspect(spec.Name)
		}
		return nil, err
	}
	if run.Token == "" {
		return fail(fmt.Errorf("gitlab: create runner %s: the answer has no token", spec.Name))
	}
	wait, err := f.tokenWait(run.TokenExpiresAt)
	if err != nil {
		return fail(fmt.Errorf("gitlab: create runner %s: %w", spec.Name, err))
	}
	guest, err := f.guestPlan(spec, run, wait)
	if err != nil {
		return fail(err)
	}
	return &forge.Runner{RunnerRef: ref, Guest: guest}, nil
}

// tokenWait is how long the guest's runner may wait for a job before its
// token expires (zero: no expiry). A token that would expire before the
// VM can boot is an error.
func (f *Forge) tokenWait(expires *time.Time) (time.Duration, error) {
	if expires == nil || expires.IsZero() {
		return 0, nil
	}
	margin := f.o.BootTimeout + time.Minute
	wait := expires.Sub(f.o.Now()) - margin
	if wait < time.Minute {
		return 0, fmt.Errorf("the runner token expires at %s, too soon to boot a VM (boot timeout %s) and wait for a job", expires.UTC().Format(time.RFC3339), f.o.BootTimeout)
	}
	return wait, nil
}

// ambiguous reports whether a failed request may nevertheless have been
// carried out: anything but a clean client-error answer.
func ambiguous(err error) bool {
	s := statusOf(err)
	if s >= 400 && s < 500 {
		return false // refused: 429 and validation errors create nothing
	}
	var ne net.Error
	if errors.As(err, &ne) && !ne.Timeout() && isDialError(err) {
		return false
	}
	return true
}

// isDialError reports an error from before the request was sent.
func isDialError(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Op == "dial"
}
