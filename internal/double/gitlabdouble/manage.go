package gitlabdouble

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// createRunner is POST /user/runners: a runner of the given type in the
// given group or project, with its own authentication token (glrt-).
func (s *Server) createRunner(w http.ResponseWriter, r *http.Request, g Grant) {
	var in struct {
		RunnerType      string   `json:"runner_type"`
		GroupID         *int64   `json:"group_id"`
		ProjectID       *int64   `json:"project_id"`
		Description     string   `json:"description"`
		Paused          bool     `json:"paused"`
		Locked          *bool    `json:"locked"`
		RunUntagged     *bool    `json:"run_untagged"`
		TagList         []string `json:"tag_list"`
		AccessLevel     string   `json:"access_level"`
		MaximumTimeout  *int64   `json:"maximum_timeout"`
		MaintenanceNote string   `json:"maintenance_note"`
	}
	if err := decodeParams(r, &in); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	if !g.mayManage(in.RunnerType) {
		forbidden(w)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	run := &Runner{
		Type: in.RunnerType, Description: in.Description, Tags: in.TagList, Paused: in.Paused,
		RunUntagged: true, Locked: false, AccessLevel: "not_protected",
	}
	switch in.RunnerType {
	case "instance_type":
	case "group_type":
		if in.GroupID == nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "group_id is missing"})
			return
		}
		if s.groups[*in.GroupID] == nil {
			forbidden(w)
			return
		}
		run.GroupID = *in.GroupID
	case "project_type":
		if in.ProjectID == nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "project_id is missing"})
			return
		}
		if s.projects[*in.ProjectID] == nil {
			forbidden(w)
			return
		}
		run.ProjectID = *in.ProjectID
	case "":
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "runner_type is missing"})
		return
	default:
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "runner_type does not have a valid value"})
		return
	}
	if in.RunUntagged != nil {
		run.RunUntagged = *in.RunUntagged
	}
	if in.Locked != nil {
		run.Locked = *in.Locked
	}
	if in.AccessLevel != "" {
		if in.AccessLevel != "not_protected" && in.AccessLevel != "ref_protected" {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "access_level does not have a valid value"})
			return
		}
		run.AccessLevel = in.AccessLevel
	}
	if in.MaximumTimeout != nil && *in.MaximumTimeout != 0 {
		if *in.MaximumTimeout < 600 {
			writeJSON(w, http.StatusBadRequest, map[string]any{"message": map[string][]string{"maximum_timeout": {"needs to be at least 10 minutes"}}})
			return
		}
		run.MaximumTimeout = *in.MaximumTimeout
	}
	if len(run.Tags) == 0 && !run.RunUntagged {
		writeJSON(w, http.StatusBadRequest, map[string]any{"message": map[string][]string{"tags_list": {"can not be empty when runner is not allowed to pick untagged jobs"}}})
		return
	}
	s.nextID++
	run.ID = s.nextID
	run.Token = s.newToken("glrt-")
	if s.TokenLifetime > 0 {
		exp := s.Now().Add(s.TokenLifetime).UTC().Truncate(time.Second)
		run.TokenExpiresAt = &exp
	}
	s.runners[run.ID] = run
	writeJSON(w, http.StatusCreated, map[string]any{"id": run.ID, "token": run.Token, "token_expires_at": run.TokenExpiresAt})
}

// decodeParams reads a request's parameters from its JSON body, or from a
// form body and the query, as GitLab's API accepts both.
func decodeParams(r *http.Request, v any) error {
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		b, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			return err
		}
		if len(strings.TrimSpace(string(b))) == 0 {
			b = []byte("{}")
		}
		return json.Unmarshal(b, v)
	}
	if err := r.ParseForm(); err != nil {
		return err
	}
	m := map[string]any{}
	for k, vs := range r.Form {
		k = strings.TrimSuffix(k, "[]")
		switch {
		case k == "tag_list":
			var tags []string
			for _, v := range vs {
				tags = append(tags, strings.Split(v, ",")...)
			}
			m[k] = tags
		case vs[0] == "true" || vs[0] == "false":
			m[k] = vs[0] == "true"
		default:
			if n, err := strconv.ParseInt(vs[0], 10, 64); err == nil {
				m[k] = n
			} else {
				m[k] = vs[0]
			}
		}
	}
	b, _ := json.Marshal(m)
	return json.Unmarshal(b, v)
}

// deleteRunner is DELETE /runners/:id, by a user who may manage the
// runner's type (Grant.mayManage).
func (s *Server) deleteRunner(w http.ResponseWriter, g Grant, id string) {
	n, _ := strconv.ParseInt(id, 10, 64)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.runners[n] == nil {
		writeJSON(w, http.StatusNotFound, map[string]string{"message": "404 Runner Not Found"})
		return
	}
	if !g.mayManage(s.runners[n].Type) {
		forbidden(w)
		return
	}
	delete(s.runners, n)
	s.deleted[n] = s.Now()
	w.WriteHeader(http.StatusNoContent)
}

// deleteRunnerByToken is DELETE /runners with the runner's own token.
func (s *Server) deleteRunnerByToken(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Token string `json:"token"`
	}
	if err := decodeParams(r, &in); err != nil || in.Token == "" {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "token is missing"})
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	run := s.runnerByTokenLocked(in.Token)
	if run == nil {
		forbidden(w)
		return
	}
	delete(s.runners, run.ID)
	s.deleted[run.ID] = s.Now()
	w.WriteHeader(http.StatusNoContent)
}

// runnerJSON is a runner as GET /runners/... lists it.
func runnerJSON(x *Runner) map[string]any {
	status := "never_contacted"
	if x.Contacted {
		status = "online"
	}
	return map[string]any{
		"id": x.ID, "description": x.Description, "ip_address": "", "active": !x.Paused, "paused": x.Paused,
		"is_shared": x.Type == "instance_type", "runner_type": x.Type, "name": "gitlab-runner",
		"online": x.Contacted, "status": status,
	}
}

func (s *Server) listRunners(w http.ResponseWriter, r *http.Request, keep func(*Runner) bool) {
	s.mu.Lock()
	var out []map[string]any
	for _, id := range sortedKeys(s.runners) {
		x := s.runners[id]
		if t := r.URL.Query().Get("type"); t != "" && x.Type != t {
			continue
		}
		if keep(x) {
			out = append(out, runnerJSON(x))
		}
	}
	s.mu.Unlock()
	paginate(w, r, out)
}

// listScopeRunners is GET /projects/:id/runners or /groups/:id/runners:
// the project or group found, its runners for at least its Maintainer
// (read_project_runners, read_group_runners), 403 for others.
func (s *Server) listScopeRunners(w http.ResponseWriter, r *http.Request, g Grant, kind, id string) {
	s.mu.Lock()
	var pid, gid int64
	if kind == "project" {
		if p := s.projectLocked(id); p != nil {
			pid = p.ID
		}
	} else if grp := s.groupLocked(id); grp != nil {
		gid = grp.ID
	}
	s.mu.Unlock()
	if pid == 0 && gid == 0 {
		writeJSON(w, http.StatusNotFound, map[string]string{"message": "404 Not Found"})
		return
	}
	if !g.atLeast(Maintainer) {
		forbidden(w)
		return
	}
	s.listRunners(w, r, func(x *Runner) bool {
		switch x.Type {
		case "project_type":
			return pid != 0 && x.ProjectID == pid
		case "group_type":
			return gid != 0 && x.GroupID == gid
		}
		return true
	})
}

// projectView is how much of a project GitLab's API shows.
type projectView struct {
	// simple: a listing with simple=true (API::Entities::BasicProjectDetails).
	simple bool
	// admin: the user may admin_project (Maintainer, Owner or
	// administrator): API::Entities::Project shows the CI/CD settings,
	// group_runners_enabled among them, only then.
	admin bool
}

// viewOf is the view a request with grant g gets.
func viewOf(r *http.Request, g Grant) projectView {
	return projectView{simple: r.URL.Query().Get("simple") == "true", admin: g.atLeast(Maintainer)}
}

func projectJSON(p *Project, groupPath string, groupID int64, v projectView) map[string]any {
	name := path.Base(p.FullPath)
	out := map[string]any{
		"id": p.ID, "name": name, "path": name, "path_with_namespace": p.FullPath,
		"name_with_namespace": strings.ReplaceAll(p.FullPath, "/", " / "),
		"namespace":           map[string]any{"id": groupID, "name": path.Base(groupPath), "path": path.Base(groupPath), "kind": "group", "full_path": groupPath},
		"last_activity_at":    p.LastActivity.UTC().Format(time.RFC3339Nano),
		"web_url":             "http://gitlab.invalid/" + p.FullPath,
	}
	if v.simple {
		return out
	}
	out["archived"] = false
	out["shared_runners_enabled"] = !p.SharedRunnersOff
	if v.admin {
		out["group_runners_enabled"] = !p.GroupRunnersOff
	}
	return out
}

func (s *Server) getProject(w http.ResponseWriter, r *http.Request, id string) {
	g, _ := s.grant(r)
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.projectLocked(id)
	if p == nil {
		writeJSON(w, http.StatusNotFound, map[string]string{"message": "404 Project Not Found"})
		return
	}
	writeJSON(w, http.StatusOK, projectJSON(p, s.groups[p.GroupID].FullPath, p.GroupID, projectView{admin: g.atLeast(Maintainer)}))
}

func (s *Server) getGroup(w http.ResponseWriter, id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.groupLocked(id)
	if g == nil {
		writeJSON(w, http.StatusNotFound, map[string]string{"message": "404 Group Not Found"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"id": g.ID, "name": path.Base(g.FullPath), "path": path.Base(g.FullPath), "full_path": g.FullPath})
}

// listProjects is GET /projects (or a group's projects, with keep).
func (s *Server) listProjects(w http.ResponseWriter, r *http.Request, keep func(*Project) bool) {
	g, _ := s.grant(r)
	view := viewOf(r, g)
	s.mu.Lock()
	var ps []*Project
	for _, id := range sortedKeys(s.projects) {
		if p := s.projects[id]; keep(p) {
			ps = append(ps, p)
		}
	}
	// GitLab orders by order_by (default created_at, which follows IDs
	// here) and sort (default desc).
	q := r.URL.Query()
	less := func(a, b *Project) bool { return a.ID < b.ID }
	switch q.Get("order_by") {
	case "", "id", "created_at":
	case "last_activity_at":
		less = func(a, b *Project) bool { return a.LastActivity.Before(b.LastActivity) }
	default:
		s.mu.Unlock()
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "order_by does not have a valid value"})
		return
	}
	switch q.Get("sort") {
	case "", "desc":
		sort.SliceStable(ps, func(i, j int) bool { return less(ps[j], ps[i]) })
	case "asc":
		sort.SliceStable(ps, func(i, j int) bool { return less(ps[i], ps[j]) })
	default:
		s.mu.Unlock()
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "sort does not have a valid value"})
		return
	}
	out := make([]map[string]any, 0, len(ps))
	for _, p := range ps {
		out = append(out, projectJSON(p, s.groups[p.GroupID].FullPath, p.GroupID, view))
	}
	s.mu.Unlock()
	paginate(w, r, out)
}

// listGroupProjects is GET /groups/:id/projects: include_subgroups
// honoured, and with_shared (default true) lists the projects shared with
// the group too.
func (s *Server) listGroupProjects(w http.ResponseWriter, r *http.Request, id string) {
	s.mu.Lock()
	g := s.groupLocked(id)
	var full string
	if g != nil {
		full = g.FullPath
	}
	paths := map[int64]string{}
	for gid, x := range s.groups {
		paths[gid] = x.FullPath
	}
	s.mu.Unlock()
	if g == nil {
		writeJSON(w, http.StatusNotFound, map[string]string{"message": "404 Group Not Found"})
		return
	}
	q := r.URL.Query()
	sub := q.Get("include_subgroups") == "true"
	shared := q.Get("with_shared") != "false"
	s.listProjects(w, r, func(p *Project) bool {
		return p.GroupID == g.ID || (sub && strings.HasPrefix(paths[p.GroupID], full+"/")) ||
			(shared && slices.Contains(p.SharedWith, g.ID))
	})
}

// jobJSON is a job as the Jobs API shows it.
func (s *Server) jobJSON(j *Job) map[string]any {
	var runner any
	if x := s.runners[j.RunnerID]; x != nil {
		runner = runnerJSON(x)
	}
	ts := func(t time.Time) any { return timestamp(t, time.RFC3339Nano) }
	p := s.projects[j.ProjectID]
	return map[string]any{
		"id": j.ID, "status": j.Status, "stage": j.Stage, "name": j.Name, "ref": j.Ref, "tag": false,
		"coverage": nil, "allow_failure": false, "created_at": ts(j.CreatedAt), "started_at": ts(j.StartedAt),
		"finished_at": ts(j.EndedAt), "tag_list": nonNil(j.Tags), "runner": runner,
		"pipeline": map[string]any{"id": j.ID, "project_id": j.ProjectID, "ref": j.Ref, "sha": sha(j), "status": j.Status},
		"web_url":  fmt.Sprintf("http://gitlab.invalid/%s/-/jobs/%d", p.FullPath, j.ID),
	}
}

// listJobs is GET /projects/:id/jobs with scope[] filters, newest first.
// A project with CI/CD disabled is answered as GitLab's
// authorize_read_builds! does: 403 Forbidden.
func (s *Server) listJobs(w http.ResponseWriter, r *http.Request, id string) {
	q := r.URL.Query()
	scopes := append(q["scope[]"], q["scope"]...)
	s.mu.Lock()
	p := s.projectLocked(id)
	if p == nil {
		s.mu.Unlock()
		writeJSON(w, http.StatusNotFound, map[string]string{"message": "404 Project Not Found"})
		return
	}
	if p.BuildsDisabled {
		s.mu.Unlock()
		forbidden(w)
		return
	}
	var out []map[string]any
	ids := sortedKeys(s.jobs)
	slices.Reverse(ids)
	for _, jid := range ids {
		j := s.jobs[jid]
		if j.ProjectID == p.ID && (len(scopes) == 0 || slices.Contains(scopes, j.Status)) {
			out = append(out, s.jobJSON(j))
		}
	}
	s.mu.Unlock()
	paginate(w, r, out)
}

// getJob is GET /projects/:id/jobs/:job_id.
func (s *Server) getJob(w http.ResponseWriter, pid, jid string) {
	n, _ := strconv.ParseInt(jid, 10, 64)
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.projectLocked(pid)
	j := s.jobs[n]
	if p == nil || j == nil || j.ProjectID != p.ID {
		writeJSON(w, http.StatusNotFound, map[string]string{"message": "404 Not found"})
		return
	}
	writeJSON(w, http.StatusOK, s.jobJSON(j))
}

// paginate writes one page of items with GitLab's pagination headers.
func paginate(w http.ResponseWriter, r *http.Request, items []map[string]any) {
	page, _ := strconv.Atoi(r.URL.Query().Get("page"))
	per, _ := strconv.Atoi(r.URL.Query().Get("per_page"))
	if page < 1 {
		page = 1
	}
	if per < 1 {
		per = 20
	}
	per = min(per, 100)
	total := len(items)
	pages := max((total+per-1)/per, 1)
	lo, hi := min((page-1)*per, total), min(page*per, total)
	h := w.Header()
	h.Set("X-Page", strconv.Itoa(page))
	h.Set("X-Per-Page", strconv.Itoa(per))
	h.Set("X-Total", strconv.Itoa(total))
	h.Set("X-Total-Pages", strconv.Itoa(pages))
	if page < pages {
		h.Set("X-Next-Page", strconv.Itoa(page+1))
	} else {
		h.Set("X-Next-Page", "")
	}
	if items == nil {
		items = []map[string]any{}
	}
	writeJSON(w, http.StatusOK, items[lo:hi])
}

// projectLocked finds a project by numeric ID or full path.
func (s *Server) projectLocked(id string) *Project {
	if n, err := strconv.ParseInt(id, 10, 64); err == nil {
		return s.projects[n]
	}
	return s.projectByPathLocked(id)
}

func (s *Server) projectByPathLocked(full string) *Project {
	for _, p := range s.projects {
		if p.FullPath == full {
			return p
		}
	}
	return nil
}

// groupLocked finds a group by numeric ID or full path.
func (s *Server) groupLocked(id string) *Group {
	if n, err := strconv.ParseInt(id, 10, 64); err == nil {
		return s.groups[n]
	}
	for _, g := range s.groups {
		if g.FullPath == id {
			return g
		}
	}
	return nil
}

func (s *Server) runnerByTokenLocked(tok string) *Runner {
	for _, x := range s.runners {
		if tok != "" && x.Token == tok {
			return x
		}
	}
	return nil
}

func sortedKeys[V any](m map[int64]V) []int64 {
	ks := make([]int64, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// sha is the commit a job builds: its repository's, else a stable fake.
func sha(j *Job) string {
	if j.SHA != "" {
		return j.SHA
	}
	return fmt.Sprintf("%040x", j.ID)
}

// timestamp is t in layout, or null when unset.
func timestamp(t time.Time, layout string) any {
	if t.IsZero() {
		return nil
	}
	return t.UTC().Format(layout)
}
