package gitlabdouble

import (
	"net/http"
	"path"
	"slices"
	"strconv"
	"strings"
)

// listRunnerJobs is GET /runners/:id/jobs, as GitLab's Runners API
// documents "List jobs processed by a runner": the jobs the runner ran or
// runs, each with its project, newest first (sort=asc: oldest first),
// filtered by status (running, success, failed or canceled). It needs a
// token with the api or read_api scope of an administrator (an instance
// runner) or of a Maintainer (a group or project runner), and lists only
// jobs of projects where the token's user is at least a Reporter. A
// deleted runner is not found (404): GitLab deletes the runner, and its
// jobs' runner_id is nulled.
func (s *Server) listRunnerJobs(w http.ResponseWriter, r *http.Request, g Grant, id string) {
	if !g.can("api", "read_api") {
		insufficientScope(w)
		return
	}
	q := r.URL.Query()
	status := q.Get("status")
	if status != "" && !slices.Contains([]string{"running", "success", "failed", "canceled"}, status) {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "status does not have a valid value"})
		return
	}
	if ob := q.Get("order_by"); ob != "" && ob != "id" {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "order_by does not have a valid value"})
		return
	}
	sortAsc := false
	switch q.Get("sort") {
	case "", "desc":
	case "asc":
		sortAsc = true
	default:
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "sort does not have a valid value"})
		return
	}
	n, _ := strconv.ParseInt(id, 10, 64)
	s.mu.Lock()
	run := s.runners[n]
	if run == nil {
		s.mu.Unlock()
		writeJSON(w, http.StatusNotFound, map[string]string{"message": "404 Runner Not Found"})
		return
	}
	if (run.Type == "instance_type" && !g.Admin) || !g.atLeast(Maintainer) {
		s.mu.Unlock()
		writeJSON(w, http.StatusForbidden, map[string]string{"message": "403 Forbidden - No access granted"})
		return
	}
	ids := sortedKeys(s.jobs)
	if !sortAsc {
		slices.Reverse(ids)
	}
	out := []map[string]any{}
	for _, jid := range ids {
		j := s.jobs[jid]
		if j.RunnerID != run.ID || (status != "" && j.Status != status) || !g.atLeast(Reporter) {
			continue
		}
		o := s.jobJSON(j)
		p := s.projects[j.ProjectID]
		name := path.Base(p.FullPath)
		o["project"] = map[string]any{
			"id": p.ID, "name": name, "path": name, "path_with_namespace": p.FullPath,
			"name_with_namespace": strings.ReplaceAll(p.FullPath, "/", " / "), "description": nil,
		}
		out = append(out, o)
	}
	s.mu.Unlock()
	paginate(w, r, out)
}

// cancelable is GitLab's Ci::Build#cancelable?: a job that has not
// finished (nor is being cancelled already).
func cancelable(status string) bool {
	switch status {
	case "created", "waiting_for_resource", "preparing", "pending", "running", "scheduled":
		return true
	}
	return false
}

// cancelJob is POST /projects/:id/jobs/:job_id/cancel, as GitLab's Jobs
// API and its Ci::BuildCancelService do it. The token needs the api scope
// (403 insufficient_scope), its user at least the Developer role in the
// project (403); a project it cannot see, or a job of another project,
// is not found (404); a job of a protected branch needs a user who may
// push or merge to it (403: Maintainer for the default branch). A job that has finished (success, failed,
// canceled, skipped) or is being cancelled already is answered 422 and
// left as it is. A pending job, or a running job whose runner does not
// cancel gracefully, is canceled at once: its job token is revoked, so
// its runner's next update is refused (403, Job-Status: canceled). A
// running job whose runner announced cancel_gracefully turns canceling,
// and waits for its runner to finish it; force=true (a Maintainer, GitLab
// 17.11 or later) moves a canceling job to canceled.
func (s *Server) cancelJob(w http.ResponseWriter, r *http.Request, g Grant, pid, jid string) {
	if !g.can("api") {
		insufficientScope(w)
		return
	}
	var in struct {
		Force bool `json:"force"`
	}
	if err := decodeParams(r, &in); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	n, _ := strconv.ParseInt(jid, 10, 64)
	s.mu.Lock()
	p := s.projectLocked(pid)
	if p == nil || !g.atLeast(Guest) {
		s.mu.Unlock()
		writeJSON(w, http.StatusNotFound, map[string]string{"message": "404 Project Not Found"})
		return
	}
	if !g.atLeast(Developer) {
		s.mu.Unlock()
		forbidden(w)
		return
	}
	j := s.jobs[n]
	if j == nil || j.ProjectID != p.ID {
		s.mu.Unlock()
		writeJSON(w, http.StatusNotFound, map[string]string{"message": "404 Job Not Found"})
		return
	}
	if least, ok := p.Protected[j.Ref]; ok && g.Role < least {
		// Ci::BuildPolicy: a job of a protected branch is updated only
		// by a user who may push or merge to it, by role: an
		// administrator is no exception (ProtectedRefAccess).
		s.mu.Unlock()
		forbidden(w)
		return
	}
	switch {
	case in.Force && j.Status == "canceling" && g.atLeast(Maintainer):
		s.endCanceledLocked(j)
	case !cancelable(j.Status):
		s.mu.Unlock()
		writeJSON(w, http.StatusUnprocessableEntity, map[string]string{"message": "Unprocessable entity"})
		return
	case j.Status == "running" && j.Graceful:
		j.Status = "canceling"
	default:
		s.endCanceledLocked(j)
	}
	out := s.jobJSON(j)
	s.mu.Unlock()
	s.deliver(j.ID)
	writeJSON(w, http.StatusCreated, out)
}

func (s *Server) endCanceledLocked(j *Job) {
	j.Status, j.EndedAt, j.Token = "canceled", s.Now(), ""
}
