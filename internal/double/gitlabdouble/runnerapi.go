package gitlabdouble

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
)

// verifyRunner is POST /runners/verify: 200 with the runner's id and
// token expiry for a valid runner token, 403 otherwise.
func (s *Server) verifyRunner(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Token    string `json:"token"`
		SystemID string `json:"system_id"`
	}
	if err := decodeParams(r, &in); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	run := s.validRunnerLocked(in.Token)
	if run == nil {
		forbidden(w)
		return
	}
	run.Contacted = true
	writeJSON(w, http.StatusOK, map[string]any{"id": run.ID, "token": run.Token, "token_expires_at": run.TokenExpiresAt})
}

// validRunnerLocked returns the runner whose unexpired token this is.
func (s *Server) validRunnerLocked(tok string) *Runner {
	run := s.runnerByTokenLocked(tok)
	if run == nil || (run.TokenExpiresAt != nil && !s.Now().Before(*run.TokenExpiresAt)) {
		return nil
	}
	return run
}

// canRun reports whether GitLab would give job j to runner x: the runner
// is not paused, the job's project is in the runner's scope, every job tag
// is a runner tag (an untagged job needs run_untagged), and a runner for
// protected refs only takes jobs of protected refs; a project that turned
// instance (shared) or group runners off gets none of those.
func (s *Server) canRun(x *Runner, j *Job) bool {
	if x.Paused || j.Status != "pending" {
		return false
	}
	p := s.projects[j.ProjectID]
	switch x.Type {
	case "project_type":
		if j.ProjectID != x.ProjectID {
			return false
		}
	case "instance_type":
		if p.SharedRunnersOff {
			return false
		}
	case "group_type":
		if p.GroupRunnersOff {
			return false
		}
		g := s.groups[x.GroupID]
		if g == nil || (p.GroupID != g.ID && !strings.HasPrefix(s.groups[p.GroupID].FullPath, g.FullPath+"/")) {
			return false
		}
	}
	if len(j.Tags) == 0 && !x.RunUntagged {
		return false
	}
	for _, t := range j.Tags {
		if !slices.Contains(x.Tags, t) {
			return false
		}
	}
	return x.AccessLevel != "ref_protected" || j.Protected
}

// requestJob is POST /jobs/request: 201 with the oldest job the runner may
// take (now running on it), 204 when there is none, 403 for a bad token.
func (s *Server) requestJob(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Token string `json:"token"`
		Info  struct {
			Features map[string]bool `json:"features"`
		} `json:"info"`
	}
	if err := decodeParams(r, &in); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	s.mu.Lock()
	run := s.validRunnerLocked(in.Token)
	if run == nil {
		s.mu.Unlock()
		forbidden(w)
		return
	}
	run.Contacted = true
	var job *Job
	for _, id := range sortedKeys(s.jobs) {
		if j := s.jobs[id]; s.canRun(run, j) {
			job = j
			break
		}
	}
	if job == nil {
		s.mu.Unlock()
		w.Header().Set("X-GitLab-Last-Update", strconv.FormatInt(s.Now().Unix(), 10))
		w.WriteHeader(http.StatusNoContent)
		return
	}
	job.Status, job.RunnerID, job.StartedAt = "running", run.ID, s.Now()
	job.Graceful = in.Info.Features["cancel_gracefully"]
	job.Token = s.newToken("glcbt-")
	run.JobsTaken++
	resp := s.jobPayloadLocked(job, run)
	s.mu.Unlock()
	s.deliver(job.ID)
	writeJSON(w, http.StatusCreated, resp)
}

// jobPayloadLocked is the job as a runner receives it.
func (s *Server) jobPayloadLocked(j *Job, run *Runner) map[string]any {
	p := s.projects[j.ProjectID]
	timeout := int64(3600)
	if run.MaximumTimeout > 0 {
		timeout = min(timeout, run.MaximumTimeout)
	}
	vars := []map[string]any{}
	for _, kv := range [][2]string{
		{"CI_JOB_ID", strconv.FormatInt(j.ID, 10)}, {"CI_JOB_NAME", j.Name},
		{"CI_PROJECT_PATH", p.FullPath}, {"CI_RUNNER_TAGS", "[" + strings.Join(quoteAll(run.Tags), ", ") + "]"},
	} {
		vars = append(vars, map[string]any{"key": kv[0], "value": kv[1], "public": true, "masked": false})
	}
	vars = append(vars, map[string]any{"key": "CI_JOB_TOKEN", "value": j.Token, "public": false, "masked": true})
	if _, ok := s.repoHeads[p.ID]; !ok {
		// A project made without InitRepo stands for one whose
		// .gitlab-ci.yml sets GIT_STRATEGY: none: the double has no
		// repository for its jobs to fetch.
		vars = append(vars, map[string]any{"key": "GIT_STRATEGY", "value": "none", "public": true, "masked": false})
	}
	return map[string]any{
		"id": j.ID, "token": j.Token, "allow_git_fetch": true,
		"job_info": map[string]any{
			"id": j.ID, "name": j.Name, "stage": j.Stage, "project_id": p.ID,
			"project_name":          path.Base(p.FullPath), // project.name (GitLab's JobInfo entity), no namespace
			"time_in_queue_seconds": int64(s.Now().Sub(j.CreatedAt).Seconds()),
		},
		"git_info": map[string]any{
			"repo_url": s.repoURLLocked(p, j), "ref": j.Ref, "sha": sha(j),
			"before_sha": strings.Repeat("0", 40), "ref_type": "branch",
			"refspecs": refspecs(j), "depth": 20,
		},
		"runner_info": map[string]any{"timeout": timeout, "runner_session_url": nil},
		"variables":   vars,
		"steps": []map[string]any{{
			"name": "script", "script": nonNil(j.Script), "timeout": timeout, "when": "on_success", "allow_failure": false,
		}},
		"image": nil, "services": []any{}, "artifacts": []any{}, "cache": []any{},
		"credentials": []any{}, "dependencies": []any{},
		"features": map[string]any{"trace_sections": true},
	}
}

// refspecs are what GitLab's BuildRunnerPresenter sends for a branch
// job with a git depth: the pipeline's persistent ref, then the branch.
func refspecs(j *Job) []string {
	p := fmt.Sprintf("refs/pipelines/%d", j.ID)
	return []string{"+" + p + ":" + p, "+refs/heads/" + j.Ref + ":refs/remotes/origin/" + j.Ref}
}

func quoteAll(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = strconv.Quote(s)
	}
	return out
}

// runningJobLocked returns the running job id whose job token tok is, or
// writes the error answer and returns nil.
func (s *Server) runningJobLocked(w http.ResponseWriter, id, tok string) *Job {
	n, _ := strconv.ParseInt(id, 10, 64)
	j := s.jobs[n]
	if j == nil {
		// GitLab answers 403, not 404, so that a runner still running
		// the job ends it (lib/api/ci/helpers/runner.rb).
		forbidden(w)
		return nil
	}
	if tok == "" || tok != j.Token || j.Status != "running" {
		w.Header().Set("Job-Status", j.Status)
		writeJSON(w, http.StatusForbidden, map[string]string{"message": "403 Forbidden - Job is not running"})
		return nil
	}
	return j
}

// updateJob is PUT /jobs/:id with the job token: the runner reports the
// job running, or its end (success or failed); any other state, none
// included, is 400 (GitLab's UpdateBuildStateService). An end whose
// output size differs from the log received so far is answered 202:
// send the rest of the log and try again.
func (s *Server) updateJob(w http.ResponseWriter, r *http.Request, id string) {
	var in struct {
		Token         string `json:"token"`
		State         string `json:"state"`
		FailureReason string `json:"failure_reason"`
		ExitCode      *int   `json:"exit_code"`
		Output        *struct {
			Checksum string `json:"checksum"`
			Bytesize *int   `json:"bytesize"`
		} `json:"output"`
	}
	if err := decodeParams(r, &in); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	s.mu.Lock()
	j := s.runningJobLocked(w, id, in.Token)
	if j == nil {
		s.mu.Unlock()
		return
	}
	switch in.State {
	case "running":
		w.Header().Set("Job-Status", j.Status)
		s.mu.Unlock()
		writeJSON(w, http.StatusOK, map[string]string{})
		return
	case "success", "failed":
	default:
		s.mu.Unlock()
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "state does not have a valid value"})
		return
	}
	if in.Output != nil && in.Output.Bytesize != nil && *in.Output.Bytesize != len(j.Trace) {
		w.Header().Set("Job-Status", j.Status)
		w.Header().Set("X-GitLab-Trace-Update-Interval", "1")
		s.mu.Unlock()
		writeJSON(w, http.StatusAccepted, map[string]string{})
		return
	}
	j.Status, j.EndedAt, j.Token = in.State, s.Now(), ""
	if in.ExitCode != nil {
		j.ExitCode = *in.ExitCode
	}
	w.Header().Set("Job-Status", j.Status)
	s.mu.Unlock()
	s.deliver(j.ID)
	writeJSON(w, http.StatusOK, map[string]string{})
}

// patchTrace is PATCH /jobs/:id/trace with the JOB-TOKEN header: it
// appends the body at the offset Content-Range starts at, which must be
// the log's current length (else 416 with the current Range).
func (s *Server) patchTrace(w http.ResponseWriter, r *http.Request, id string) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 4<<20))
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	j := s.runningJobLocked(w, id, r.Header.Get("Job-Token"))
	if j == nil {
		return
	}
	start, _, ok := strings.Cut(r.Header.Get("Content-Range"), "-")
	from, err := strconv.Atoi(start)
	if !ok || err != nil || from != len(j.Trace) {
		w.Header().Set("Range", fmt.Sprintf("0-%d", len(j.Trace)))
		w.Header().Set("Job-Status", j.Status)
		writeJSON(w, http.StatusRequestedRangeNotSatisfiable, map[string]string{"message": "416 Range Not Satisfiable"})
		return
	}
	j.Trace = append(j.Trace, body...)
	w.Header().Set("Range", fmt.Sprintf("0-%d", len(j.Trace)))
	w.Header().Set("Job-Status", j.Status)
	w.Header().Set("X-GitLab-Trace-Update-Interval", "3")
	w.WriteHeader(http.StatusAccepted)
}

// repoURLLocked is the job's git_info.repo_url as GitLab gives it: the
// project's HTTP clone URL with gitlab-ci-token and the job token in it.
func (s *Server) repoURLLocked(p *Project, j *Job) string {
	base := s.ExternalURL
	if base == "" {
		base = "http://gitlab.invalid"
	}
	u, err := url.Parse(strings.TrimRight(base, "/") + "/" + p.FullPath + ".git")
	if err != nil {
		return ""
	}
	tok := j.Token
	if j.WrongCloneToken {
		tok = "glcbt-not-the-job-token"
	}
	u.User = url.UserPassword("gitlab-ci-token", tok)
	return u.String()
}
