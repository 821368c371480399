package gitlab

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	gl "gitlab.com/gitlab-org/api/client-go/v2"

	"github.com/nixos-fireactions/nixos-fireactions/forge"
)

// maxPages bounds list walks, so a misbehaving server cannot loop us.
const maxPages = 50

// suspectTTL is how long a runner name whose creation failed ambiguously
// is looked for (and removed) in runner listings.
const suspectTTL = 15 * time.Minute

// scopeRef returns the numeric ID of the scope's group or project (0 for
// the instance), looked up once by its path.
func (f *Forge) scopeRef(ctx context.Context) (int64, error) {
	f.mu.Lock()
	id := f.scopeID
	f.mu.Unlock()
	if id != 0 || f.o.Scope.Kind == ScopeInstance {
		return id, nil
	}
	switch f.o.Scope.Kind {
	case ScopeProject:
		p, _, err := f.api.Projects.GetProject(f.o.Scope.Path, nil, gl.WithContext(ctx))
		if err != nil {
			return 0, fmt.Errorf("gitlab: look up project %s: %w", f.o.Scope.Path, err)
		}
		id = p.ID
	case ScopeGroup:
		g, _, err := f.api.Groups.GetGroup(f.o.Scope.Path, nil, gl.WithContext(ctx))
		if err != nil {
			return 0, fmt.Errorf("gitlab: look up group %s: %w", f.o.Scope.Path, err)
		}
		id = g.ID
	}
	f.mu.Lock()
	f.scopeID = id
	f.mu.Unlock()
	return id, nil
}

// runnerType is the runner_type of the scope's runners.
func (f *Forge) runnerType() string {
	switch f.o.Scope.Kind {
	case ScopeGroup:
		return "group_type"
	case ScopeProject:
		return "project_type"
	}
	return "instance_type"
}

// listRunners lists the runners of the scope's own type: the project's,
// the group's, or (with an administrator's token) the instance's.
func (f *Forge) listRunners(ctx context.Context) ([]*gl.Runner, error) {
	id, err := f.scopeRef(ctx)
	if err != nil {
		return nil, err
	}
	typ := f.runnerType()
	var all []*gl.Runner
	for page := int64(1); page <= maxPages; {
		lo := gl.ListOptions{Page: page, PerPage: 100}
		var rs []*gl.Runner
		var resp *gl.Response
		switch f.o.Scope.Kind {
		case ScopeProject:
			rs, resp, err = f.api.Runners.ListProjectRunners(id, &gl.ListProjectRunnersOptions{ListOptions: lo, Type: &typ}, gl.WithContext(ctx))
		case ScopeGroup:
			rs, resp, err = f.api.Runners.ListGroupsRunners(id, &gl.ListGroupsRunnersOptions{ListOptions: lo, Type: &typ}, gl.WithContext(ctx))
		default:
			rs, resp, err = f.api.Runners.ListAllRunners(&gl.ListRunnersOptions{ListOptions: lo, Type: &typ}, gl.WithContext(ctx))
		}
		if err != nil {
			return nil, fmt.Errorf("gitlab: list runners: %w", err)
		}
		all = append(all, rs...)
		if resp == nil || resp.NextPage == 0 {
			break
		}
		page = resp.NextPage
	}
	return all, nil
}

// runnerName is the runner name a description starts with.
func runnerName(description string) string {
	name, _, _ := strings.Cut(description, " ")
	return name
}

// Runners implements forge.Forge. GitLab's runner listing says nothing of
// a runner being busy: the guest's log tells the pool that instead. Runners
// a failed creation may have left are removed here, not reported.
func (f *Forge) Runners(ctx context.Context, owner forge.Owner) ([]forge.RunnerState, error) {
	rs, err := f.listRunners(ctx)
	if err != nil {
		return nil, err
	}
	var out []forge.RunnerState
	for _, r := range rs {
		name := runnerName(r.Description)
		ref := forge.RunnerRef{ID: strconv.FormatInt(r.ID, 10), Name: name}
		if f.isSuspect(name) {
			if err := f.Remove(ctx, ref); err != nil {
				f.log.Warn("gitlab: remove runner left by a failed creation", "runner", name, "runner_id", r.ID, "err", err)
			} else {
				f.log.Info("gitlab: removed runner left by a failed creation", "runner", name, "runner_id", r.ID)
			}
			continue
		}
		if !owner.Owns(name) {
			continue
		}
		out = append(out, forge.RunnerState{RunnerRef: ref, Online: r.Online || r.Status == "online"})
	}
	return out, nil
}

// suspect remembers a runner name whose creation may have happened
// although the request failed.
func (f *Forge) suspect(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.suspects[name] = f.o.Now()
}

func (f *Forge) isSuspect(name string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := f.o.Now()
	for n, at := range f.suspects {
		if now.Sub(at) > suspectTTL {
			delete(f.suspects, n)
		}
	}
	_, ok := f.suspects[name]
	return ok
}

// sweep removes the runners named name, if a listing shows any. It
// returns whether the listing worked.
func (f *Forge) sweep(ctx context.Context, name string) bool {
	rs, err := f.listRunners(ctx)
	if err != nil {
		return false
	}
	ok := true
	for _, r := range rs {
		if runnerName(r.Description) == name {
			if err := f.Remove(ctx, forge.RunnerRef{ID: strconv.FormatInt(r.ID, 10), Name: name}); err != nil {
				ok = false
			}
		}
	}
	return ok
}

// Remove implements forge.Forge: DELETE /runners/:id with the scope's
// token, or, when that token may not, DELETE /runners with the runner's
// own token. What Retire learnt of the runner's jobs is dropped: the pool
// removes a runner once its job was failed, or did not need to be.
func (f *Forge) Remove(ctx context.Context, r forge.RunnerRef) error {
	if err := f.remove(ctx, r); err != nil {
		return err
	}
	if id, err := strconv.ParseInt(r.ID, 10, 64); err == nil {
		f.forgetJobs(id)
	}
	return nil
}

// remove deletes the runner at GitLab (see Remove).
func (f *Forge) remove(ctx context.Context, r forge.RunnerRef) error {
	id, err := strconv.ParseInt(r.ID, 10, 64)
	if err != nil {
		return fmt.Errorf("gitlab: remove runner %q: bad id %q", r.Name, r.ID)
	}
	_, err = f.api.Runners.RemoveRunner(id, gl.WithContext(ctx))
	if err == nil || errors.Is(err, gl.ErrNotFound) {
		f.forget(id)
		return nil
	}
	f.mu.Lock()
	tok := f.tokens[id]
	f.mu.Unlock()
	if tok != "" && (statusOf(err) == http.StatusForbidden || statusOf(err) == http.StatusUnauthorized) {
		_, terr := f.api.Runners.DeleteRegisteredRunner(&gl.DeleteRegisteredRunnerOptions{Token: &tok}, gl.WithContext(ctx))
		// 403 to the runner's own token: no runner has it any more.
		if terr == nil || statusOf(terr) == http.StatusForbidden {
			f.forget(id)
			return nil
		}
		return fmt.Errorf("gitlab: remove runner %d (%s) by its token: %s", id, r.Name, redact(terr, tok))
	}
	return fmt.Errorf("gitlab: remove runner %d (%s): %w", id, r.Name, err)
}

func (f *Forge) forget(id int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.tokens, id)
}

// statusOf is the HTTP status of a GitLab error response, or 0.
func statusOf(err error) int {
	var er *gl.ErrorResponse
	if errors.As(err, &er) {
		if er.Response != nil {
			return er.Response.StatusCode
		}
		return er.StatusCode
	}
	if errors.Is(err, gl.ErrNotFound) {
		return http.StatusNotFound
	}
	return 0
}

// redact is err's text without secret: errors of requests that carried a
// token in their URL name that URL.
func redact(err error, secret string) string {
	if secret == "" {
		return err.Error()
	}
	return strings.ReplaceAll(err.Error(), secret, "[redacted]")
}
