package github

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/actions/scaleset"

	"github.com/nixos-fireactions/nixos-fireactions/forge"
)

// register asks the scale set for a JIT runner named spec.Name. A runner
// of that name left by an attempt whose answer was lost is removed and
// asked for once more; a runner of a failed attempt is removed.
func (s *scaleSetDemand) register(ctx context.Context, spec forge.RunnerSpec) (*forge.Runner, error) {
	cl, jit, err := s.jitRunner(ctx, spec)
	if err == nil && (jit == nil || jit.Runner == nil || jit.Runner.ID == 0 || jit.EncodedJITConfig == "") {
		err = errors.New("answer has no runner id or configuration")
	}
	if err != nil {
		if cl != nil { // a runner may have been made: removed, outside the gate
			actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			defer cancel()
			if rerr := s.removeNamed(actx, cl, spec.Name); rerr != nil {
				s.p.log.Warn("could not check for a half-registered runner; the runner listing retries", "runner", spec.Name, "err", rerr)
				s.p.cache.addPendingName(spec.Name)
			}
		}
		return nil, fmt.Errorf("github: register runner %s in scale set %s: %w", spec.Name, s.name, err)
	}
	ref := forge.RunnerRef{ID: strconv.Itoa(jit.Runner.ID), Name: spec.Name}
	return &forge.Runner{RunnerRef: ref, Guest: guestPlan(spec.Guest, jit.EncodedJITConfig)}, nil
}

// jitRunner ensures the scale set and asks it for a JIT runner, holding
// the gate shared: a VM started for a slot told before a delete must not
// create the scale set again, so the delete waits for this and a
// register after it refuses (ensure). cl is nil if no runner was asked
// for.
func (s *scaleSetDemand) jitRunner(ctx context.Context, spec forge.RunnerSpec) (*scaleset.Client, *scaleset.RunnerScaleSetJitRunnerConfig, error) {
	if err := s.gate.share(ctx); err != nil {
		return nil, nil, err
	}
	defer s.gate.unshare()
	s.mu.Lock()
	id := s.id
	s.mu.Unlock()
	if id == 0 {
		var err error
		if id, err = s.ensure(ctx); err != nil {
			return nil, nil, err
		}
	}
	cl, err := s.scaleClient(ctx)
	if err != nil {
		return nil, nil, err
	}
	setting := &scaleset.RunnerScaleSetJitRunnerSetting{Name: spec.Name, WorkFolder: "_work"}
	jit, err := cl.GenerateJitRunnerConfig(ctx, setting, id)
	if isUnauthorized(err) {
		// The admin token was refused early: a new client, once.
		s.resetClient()
		if cl, err = s.scaleClient(ctx); err != nil {
			return nil, nil, err
		}
		jit, err = cl.GenerateJitRunnerConfig(ctx, setting, id)
	}
	if errors.Is(err, scaleset.RunnerExistsError) {
		s.p.log.Info("runner name taken, by a lost earlier attempt; replacing it", "runner", spec.Name, "scaleset", s.name)
		if err = s.removeNamed(ctx, cl, spec.Name); err == nil {
			jit, err = cl.GenerateJitRunnerConfig(ctx, setting, id)
		}
	}
	return cl, jit, err
}

// removeNamed removes the scale set's runner of that name, if any.
func (s *scaleSetDemand) removeNamed(ctx context.Context, cl *scaleset.Client, name string) error {
	r, err := cl.GetRunnerByName(ctx, name)
	if err != nil || r == nil {
		return err
	}
	return s.removeWith(ctx, cl, int64(r.ID))
}

// remove removes a runner of the scale set; one already gone is not an
// error.
func (s *scaleSetDemand) remove(ctx context.Context, id int64) error {
	cl, err := s.scaleClient(ctx)
	if err != nil {
		return err
	}
	return s.removeWith(ctx, cl, id)
}

func (s *scaleSetDemand) removeWith(ctx context.Context, cl *scaleset.Client, id int64) error {
	err := cl.RemoveRunner(ctx, id)
	if err == nil || errors.Is(err, scaleset.RunnerNotFoundError) {
		return nil
	}
	return err
}

// ErrScaleSetDeleted is Register's answer after DeleteScaleSet, until
// the pool's listener starts again: the pool's scale set is gone and no
// runner registers in it. It is a forge.ErrDemandSourceDeleted.
var ErrScaleSetDeleted = fmt.Errorf("%w (delete-scaleset); no runner registers until the pool's listener starts again",
	forge.ErrDemandSourceDeleted)

// DeleteScaleSet stops the pool's listener and deletes its scale set at
// GitHub (jobs assigned to it and not started go back to GitHub's
// queue). Only an explicit command does this: a restart keeps the scale
// set. Once deleted, the pool's queue is told empty and Register refuses
// (ErrScaleSetDeleted); a delete that fails starts the listener again
// if it ran. It errors for a pool not in scale-set mode.
func (p *Pool) DeleteScaleSet(ctx context.Context) (err error) {
	if p.ss == nil {
		return fmt.Errorf("github: scope %s: %w", p.scope, forge.ErrNoDemandSource)
	}
	s := p.ss
	if s.running() {
		defer func() {
			if err != nil {
				p.log.Warn("scale set not deleted; listening again", "scaleset", s.name, "err", err)
				s.start()
			}
		}()
	}
	select {
	case <-s.stop():
	case <-ctx.Done():
		return ctx.Err()
	}
	// A register under way in the network is waited for only as long
	// as the caller waits.
	if err := s.gate.hold(ctx); err != nil {
		return fmt.Errorf("github: delete scale set %s: wait for registers under way: %w", s.name, err)
	}
	defer s.gate.release()
	if err := s.deleteSet(ctx); err != nil {
		return err
	}
	s.mu.Lock()
	s.id, s.deleted = 0, true
	s.mu.Unlock()
	s.setQueued(0)
	return nil
}

// deleteSet deletes the scale set at GitHub; one already gone is not an
// error.
func (s *scaleSetDemand) deleteSet(ctx context.Context) error {
	cl, err := s.scaleClient(ctx)
	if err != nil {
		return err
	}
	gid, err := s.groupID(ctx, cl)
	if err != nil {
		return err
	}
	set, err := cl.GetRunnerScaleSet(ctx, gid, s.name)
	if err != nil {
		return fmt.Errorf("github: look up scale set %s: %w", s.name, err)
	}
	if set == nil {
		return nil
	}
	if err := cl.DeleteRunnerScaleSet(ctx, set.ID); err != nil {
		return fmt.Errorf("github: delete scale set %s: %w", s.name, err)
	}
	s.p.log.Info("scale set deleted", "scaleset", s.name, "id", set.ID)
	return nil
}

// DeleteDemandSource implements forge.DemandSourceDeleter: DeleteScaleSet.
func (p *Pool) DeleteDemandSource(ctx context.Context) error { return p.DeleteScaleSet(ctx) }

var _ forge.DemandSourceDeleter = (*Pool)(nil)

// ScaleSetName is the pool's scale set's name; "" when the pool takes no
// scale-set demand.
func (p *Pool) ScaleSetName() string {
	if p.ss == nil {
		return ""
	}
	return p.ss.name
}

// Quiesce stops the listeners of every scale-set pool handed out and
// waits, until ctx ends, for their sessions to be deleted.
func (c *Client) Quiesce(ctx context.Context) error {
	c.mu.Lock()
	all := slices.Clone(c.all)
	c.mu.Unlock()
	for _, p := range all {
		if p.ss == nil {
			continue
		}
		select {
		case <-p.ss.stop():
		case <-ctx.Done():
			return fmt.Errorf("github: scale set %s: %w", p.ss.name, ctx.Err())
		}
	}
	return nil
}
