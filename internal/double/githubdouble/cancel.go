package githubdouble

import (
	"maps"
	"net/http"
	"slices"
	"strings"
)

// defaultPermissions are what an installation may do unless a test says
// otherwise (SetPermissions): manage runners, read Actions. Cancelling a
// workflow run needs actions:write, which an installation has only when
// the App asks for it.
var defaultPermissions = map[string]string{
	"organization_self_hosted_runners": "write",
	"administration":                   "write",
	"actions":                          "read",
}

// defaultPATScopes are the scopes of a PAT (classic) Options.PATScopes
// does not list.
var defaultPATScopes = []string{"repo", "admin:org", "manage_runners:enterprise"}

// SetPermissions replaces an installation's permissions (name -> "read"
// or "write"), as when the App's settings change and the owner accepts;
// tokens created before keep theirs until they expire, as on GitHub.
func (d *Double) SetPermissions(inst int64, perms map[string]string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if in := d.installations[inst]; in != nil {
		in.perms = maps.Clone(perms)
	}
}

// tokenPermissions are the permissions of a token created with the
// request's "permissions" (nil: all of the installation's). Asking for
// one the installation lacks, or for write where it may read, fails.
func tokenPermissions(installed map[string]string, asked any) (map[string]string, bool) {
	want, _ := asked.(map[string]any)
	if len(want) == 0 {
		return maps.Clone(installed), true
	}
	out := map[string]string{}
	for name, v := range want {
		level, _ := v.(string)
		have := installed[name]
		if have == "" || level == "write" && have != "write" || level != "read" && level != "write" {
			return nil, false
		}
		out[name] = level
	}
	return out, true
}

// may reports whether the caller may do what needs the permission at
// level, "read" or "write" (an installation token; no permission: no
// installation token may), or the classic scope (a PAT), and else
// GitHub's answer: 403 for an integration, 404 for a PAT (GitHub does
// not tell a token without the scope that the resource exists).
func (c *call) may(permission, level, scope string) (int, any) {
	if c.tok != nil {
		have := c.tok.perms[permission]
		if permission == "" || have == "" || level == "write" && have != "write" {
			return http.StatusForbidden, basicError("Resource not accessible by integration")
		}
		return 0, nil
	}
	scopes, ok := c.d.o.PATScopes[c.pat]
	if !ok {
		scopes = defaultPATScopes
	}
	if !slices.Contains(scopes, scope) {
		return http.StatusNotFound, notFound
	}
	return 0, nil
}

// runAt finds the run the path names, in the path's repository, for a
// caller who may cancel it (actions:write; a PAT's repo scope).
func (d *Double) runAt(c *call) (*run, int, any) {
	s, _ := c.scope()
	if !c.covers(s) {
		return nil, http.StatusForbidden, basicError("Resource not accessible by integration")
	}
	if status, body := c.may("actions", "write", "repo"); status != 0 {
		return nil, status, body
	}
	r := d.runs[c.intPath("run_id")]
	if r == nil || !strings.EqualFold(r.repo, s.name) {
		return nil, http.StatusNotFound, notFound
	}
	return r, 0, nil
}

// cancelRun is GitHub's cancel: a completed run cannot be cancelled
// (409); otherwise the run's queued jobs end as cancelled at once, and a
// running job is told to cancel and ends when its runner says so. A job
// whose runner is gone therefore keeps running (GitHub ends it after its
// cancellation timeout, 5 minutes, which the double does not wait for);
// only a force-cancel ends it at once.
func cancelRun(d *Double, c *call) (int, any) {
	r, status, body := d.runAt(c)
	if r == nil {
		return status, body
	}
	if r.status == "completed" {
		return http.StatusConflict, basicError("Cannot cancel a workflow run that is completed.")
	}
	r.cancelling = true
	for _, id := range r.jobs {
		if j := d.jobs[id]; j.status != "completed" && j.status != "in_progress" {
			d.moveJob(j, "completed", "cancelled")
		}
	}
	d.runCancelled(r)
	return http.StatusAccepted, map[string]any{}
}

// forceCancelRun is GitHub's force-cancel: every job of the run that has
// not completed ends as cancelled at once, whatever its runner does, and
// the runners that ran them are free again.
func forceCancelRun(d *Double, c *call) (int, any) {
	r, status, body := d.runAt(c)
	if r == nil {
		return status, body
	}
	if r.status == "completed" {
		return http.StatusConflict, basicError("Cannot cancel a workflow run that is completed.")
	}
	r.cancelling = true
	for _, id := range r.jobs {
		j := d.jobs[id]
		if j.status == "completed" {
			continue
		}
		if rn := d.runners.byID[j.runnerID]; rn != nil && rn.job == j.id {
			rn.busy = false
		}
		d.moveJob(j, "completed", "cancelled")
	}
	d.runCancelled(r)
	return http.StatusAccepted, map[string]any{}
}

// runCancelled completes a cancelled run once all its jobs have.
// Callers hold d.mu.
func (d *Double) runCancelled(r *run) {
	for _, id := range r.jobs {
		if d.jobs[id].status != "completed" {
			return
		}
	}
	r.status, r.conclusion = "completed", "cancelled"
}

// Run is a workflow run as the double holds it.
type Run struct {
	ID         int64
	Repo       string
	Status     string // queued, in_progress, completed
	Conclusion string
	Cancelling bool // a cancel was asked for
}

// RunByID is a run's state; false when there is none.
func (d *Double) RunByID(id int64) (Run, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	r := d.runs[id]
	if r == nil {
		return Run{}, false
	}
	return Run{ID: r.id, Repo: r.repo, Status: r.status, Conclusion: r.conclusion, Cancelling: r.cancelling}, true
}
