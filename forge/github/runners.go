package github

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	gh "github.com/google/go-github/v93/github"

	"github.com/nixos-fireactions/nixos-fireactions/forge"
)

// Register implements forge.Forge: it asks GitHub for a just-in-time
// runner in the pool's scope, group and labels, and returns the guest
// plan that hands the VM only that runner's configuration. A runner left
// behind by a failed attempt (its answer lost) is removed, so no offline
// runner is leaked.
func (p *Pool) Register(ctx context.Context, spec forge.RunnerSpec) (*forge.Runner, error) {
	if p.ss != nil {
		return p.ss.register(ctx, spec)
	}
	gid, err := p.runnerGroup(ctx)
	if err != nil {
		return nil, err
	}
	req := gh.CreateJITConfigRequest{Name: spec.Name, RunnerGroupID: gid, Labels: spec.Labels, WorkFolder: gh.Ptr("_work")}
	jit, err := p.generateJIT(ctx, req)
	if isStatus(err, http.StatusConflict) {
		// The name is taken: by our own earlier attempt whose answer was
		// lost (names are unique per VM). Remove it and ask once more.
		p.log.Info("runner name taken, by a lost earlier attempt; replacing it", "runner", spec.Name)
		if err = p.removeNamed(ctx, spec.Name); err == nil {
			jit, err = p.generateJIT(ctx, req)
		}
	}
	if err == nil && (jit.GetRunner().GetID() == 0 || jit.GetEncodedJITConfig() == "") {
		err = errors.New("answer has no runner id or configuration")
	}
	if err != nil {
		p.abandon(ctx, spec.Name)
		return nil, fmt.Errorf("github: register runner %s in %s: %w", spec.Name, p.scope, p.refused(err))
	}
	ref := forge.RunnerRef{ID: strconv.FormatInt(jit.GetRunner().GetID(), 10), Name: spec.Name}
	return &forge.Runner{RunnerRef: ref, Guest: guestPlan(spec.Guest, jit.GetEncodedJITConfig())}, nil
}

// abandon removes a runner whose registration failed, if GitHub created
// it after all; when that fails too, the next runner listing retries.
func (p *Pool) abandon(ctx context.Context, name string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := p.removeNamed(ctx, name); err != nil {
		p.log.Warn("could not check for a half-registered runner; will retry", "runner", name, "err", err)
		p.cache.addPendingName(name)
	}
}

// removeNamed removes every runner of the scope with that name.
func (p *Pool) removeNamed(ctx context.Context, name string) error {
	list, err := p.listRunners(ctx, name)
	if err != nil {
		return err
	}
	for _, r := range list {
		id, _ := strconv.ParseInt(r.ID, 10, 64)
		if _, err := p.deleteRunner(ctx, id); err != nil && !isStatus(err, http.StatusNotFound) {
			return fmt.Errorf("github: remove runner %d (%s): %w", id, name, err)
		}
	}
	return nil
}

// Runners implements forge.Forge. The scope's runner list is read at
// most once a poll period (it costs API budget; the guests report their
// own state); runners a delivery said took a job count as busy.
func (p *Pool) Runners(ctx context.Context, owner forge.Owner) ([]forge.RunnerState, error) {
	list, fresh := p.cache.get(p.c.interval)
	if !fresh {
		var err error
		if list, err = p.listRunners(ctx, ""); err != nil {
			return nil, err
		}
		p.cache.put(list)
		p.retryPending(ctx, list)
	}
	var out []forge.RunnerState
	for _, r := range list {
		if owner.Owns(r.Name) {
			r.Busy = r.Busy || p.c.demand.runnerBusy(r.Name)
			out = append(out, r)
		}
	}
	return out, nil
}

// Remove implements forge.Forge. A runner already gone is not an error; a
// removal that fails is retried with the next runner listing as well.
func (p *Pool) Remove(ctx context.Context, r forge.RunnerRef) error {
	id, err := strconv.ParseInt(r.ID, 10, 64)
	if err != nil {
		return fmt.Errorf("github: remove runner %q: id %q is not a number", r.Name, r.ID)
	}
	if p.ss != nil {
		err = p.ss.remove(ctx, id)
	} else {
		_, err = p.deleteRunner(ctx, id)
	}
	if err == nil || isStatus(err, http.StatusNotFound) {
		p.cache.drop(id)
		return nil
	}
	p.cache.addPendingID(id, r.Name)
	return fmt.Errorf("github: remove runner %d (%s) from %s: %w", id, r.Name, p.scope, err)
}

// retryPending retries failed removals against a fresh list.
func (p *Pool) retryPending(ctx context.Context, list []forge.RunnerState) {
	ids, names := p.cache.pending()
	for _, r := range list {
		id, _ := strconv.ParseInt(r.ID, 10, 64)
		_, byID := ids[id]
		if !byID && !names[r.Name] {
			continue
		}
		if _, err := p.deleteRunner(ctx, id); err != nil && !isStatus(err, http.StatusNotFound) {
			p.log.Warn("remove runner (retry)", "runner", r.Name, "err", err)
			continue
		}
		p.log.Info("removed runner on retry", "runner", r.Name)
		p.cache.drop(id)
		p.cache.settleName(r.Name)
	}
	// Pending removals GitHub no longer lists are done.
	listed := map[int64]bool{}
	for _, r := range list {
		id, _ := strconv.ParseInt(r.ID, 10, 64)
		listed[id] = true
	}
	p.cache.settleAbsent(listed)
}

// listRunners lists the scope's runners, all or those named name.
func (p *Pool) listRunners(ctx context.Context, name string) ([]forge.RunnerState, error) {
	next := 0
	var out []forge.RunnerState
	for page := 0; page < maxPages; page++ {
		rs, resp, err := p.listPage(ctx, name, next)
		if err != nil {
			return nil, fmt.Errorf("github: list runners of %s: %w", p.scope, p.refused(err))
		}
		for _, r := range rs.Runners {
			out = append(out, forge.RunnerState{
				RunnerRef: forge.RunnerRef{ID: strconv.FormatInt(r.GetID(), 10), Name: r.GetName()},
				Online:    r.GetStatus() == "online",
				Busy:      r.GetBusy(),
			})
		}
		if resp.NextPage == 0 {
			break
		}
		next = resp.NextPage
	}
	return out, nil
}

func (p *Pool) generateJIT(ctx context.Context, req gh.CreateJITConfigRequest) (*gh.JITRunnerConfig, error) {
	jit := new(gh.JITRunnerConfig)
	if _, err := p.call(ctx, http.MethodPost, p.runnersPath("generate-jitconfig"), &req, jit); err != nil {
		return nil, err
	}
	return jit, nil
}

func (p *Pool) deleteRunner(ctx context.Context, id int64) (*gh.Response, error) {
	return p.call(ctx, http.MethodDelete, p.runnersPath(strconv.FormatInt(id, 10)), nil, nil)
}

// runnerGroup is the runner group's id: given as a number, the default
// group, or looked up by name in the org once.
func (p *Pool) runnerGroup(ctx context.Context) (int64, error) {
	p.groupMu.Lock()
	defer p.groupMu.Unlock()
	if p.groupID != 0 {
		return p.groupID, nil
	}
	opts := &gh.ListOrgRunnerGroupOptions{ListOptions: gh.ListOptions{PerPage: 100}}
	for page := 0; page < maxPages; page++ {
		groups, resp, err := p.gh.Actions.ListOrganizationRunnerGroups(ctx, p.scope.Org, opts)
		if err != nil {
			return 0, fmt.Errorf("github: list runner groups of org %s: %w", p.scope.Org, p.refused(err))
		}
		for _, g := range groups.RunnerGroups {
			if strings.EqualFold(g.GetName(), p.group) {
				p.groupID = g.GetID()
				return p.groupID, nil
			}
		}
		if resp.NextPage == 0 {
			break
		}
		opts.Page = resp.NextPage
	}
	return 0, fmt.Errorf("github: org %s has no runner group %q", p.scope.Org, p.group)
}
