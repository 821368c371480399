package gitlabdouble

import (
	"context"
	"fmt"
	"net/http"
	"net/http/cgi"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Git over HTTP: GitLab serves every project's repository at
// <url>/<full path>.git with Git's smart HTTP protocol, and a CI job
// clones it as gitlab-ci-token with its job token (the repo_url of the
// job's git_info carries both). The double serves the repositories made
// with InitRepo through git http-backend (Debian's git), to the token of
// a running job of that project only, and refuses pushes (a job token
// may not push by default).

// gitTimeout bounds the git commands InitRepo runs.
const gitTimeout = 30 * time.Second

// InitRepo gives the project a repository under dir (a directory the
// test owns): one commit on main holding files (name -> content). Jobs
// added afterwards check that commit out. It returns the commit's SHA.
func (s *Server) InitRepo(dir, projectPath string, files map[string]string) (string, error) {
	s.mu.Lock()
	p := s.projectByPathLocked(projectPath)
	if s.reposDir != "" && s.reposDir != dir {
		s.mu.Unlock()
		return "", fmt.Errorf("gitlabdouble: repositories are under %s already", s.reposDir)
	}
	s.mu.Unlock()
	if p == nil {
		return "", fmt.Errorf("gitlabdouble: InitRepo: unknown project %s", projectPath)
	}
	ctx, cancel := context.WithTimeout(context.Background(), gitTimeout)
	defer cancel()
	work, err := os.MkdirTemp("", "gitlabdouble-work-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(work)
	for name, content := range files {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(work, name)), 0o755); err != nil {
			return "", err
		}
		if err := os.WriteFile(filepath.Join(work, name), []byte(content), 0o644); err != nil {
			return "", err
		}
	}
	bare := filepath.Join(dir, projectPath+".git")
	env := []string{"GIT_AUTHOR_NAME=CI User", "GIT_AUTHOR_EMAIL=ci@example.invalid",
		"GIT_COMMITTER_NAME=CI User", "GIT_COMMITTER_EMAIL=ci@example.invalid", "GIT_CONFIG_NOSYSTEM=1", "HOME=" + work}
	for _, args := range [][]string{
		{"-C", work, "init", "-q", "-b", "main"},
		{"-C", work, "add", "-A"},
		{"-C", work, "commit", "-q", "--allow-empty", "-m", "initial"},
		{"clone", "-q", "--bare", work, bare},
	} {
		if out, err := gitCmd(ctx, env, args...).CombinedOutput(); err != nil {
			return "", fmt.Errorf("gitlabdouble: git %s: %w: %s", strings.Join(args, " "), err, out)
		}
	}
	out, err := gitCmd(ctx, env, "-C", bare, "rev-parse", "refs/heads/main").Output()
	if err != nil {
		return "", fmt.Errorf("gitlabdouble: git rev-parse: %w", err)
	}
	head := strings.TrimSpace(string(out))
	s.mu.Lock()
	s.reposDir = dir
	s.repoHeads[p.ID] = head
	s.mu.Unlock()
	return head, nil
}

// writePipelineRef writes refs/pipelines/<id> in the bare repository, a
// loose ref as git itself writes one.
func writePipelineRef(bare string, id int64, sha string) error {
	dir := filepath.Join(bare, "refs", "pipelines")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("write refs/pipelines/%d: %w", id, err)
	}
	if err := os.WriteFile(filepath.Join(dir, strconv.FormatInt(id, 10)), []byte(sha+"\n"), 0o644); err != nil {
		return fmt.Errorf("write refs/pipelines/%d: %w", id, err)
	}
	return nil
}

func gitCmd(ctx context.Context, env []string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Env = append(os.Environ(), env...)
	return cmd
}

// serveGit serves /<full path>.git/{info/refs,git-upload-pack}: fetches
// by the job token of a running job of the project (user
// gitlab-ci-token); pushes are refused.
func (s *Server) serveGit(w http.ResponseWriter, r *http.Request, project, rest string) {
	s.mu.Lock()
	s.calls = append(s.calls, r.Method+" "+r.URL.Path)
	p := s.projectByPathLocked(project)
	hasRepo := false
	if p != nil {
		_, hasRepo = s.repoHeads[p.ID]
	}
	user, pass, basic := r.BasicAuth()
	allowed := false
	if p != nil && basic && user == "gitlab-ci-token" && pass != "" {
		for _, j := range s.jobs {
			if j.ProjectID == p.ID && j.Status == "running" && j.Token == pass {
				allowed = true
			}
		}
	}
	dir := s.reposDir
	s.mu.Unlock()
	switch {
	case !allowed:
		// GitLab asks for credentials rather than tell whether the
		// project exists.
		w.Header().Set("WWW-Authenticate", `Basic realm="GitLab"`)
		http.Error(w, "HTTP Basic: Access denied", http.StatusUnauthorized)
		return
	case !hasRepo:
		http.Error(w, "The project you were looking for could not be found.", http.StatusNotFound)
		return
	case rest == "git-receive-pack" || r.URL.Query().Get("service") == "git-receive-pack":
		http.Error(w, "You are not allowed to push code to this project.", http.StatusForbidden)
		return
	case rest != "info/refs" && rest != "git-upload-pack":
		http.NotFound(w, r)
		return
	}
	out, err := exec.CommandContext(r.Context(), "git", "--exec-path").Output()
	if err != nil {
		http.Error(w, "no git", http.StatusInternalServerError)
		return
	}
	h := &cgi.Handler{
		Path: filepath.Join(strings.TrimSpace(string(out)), "git-http-backend"),
		Root: "/",
		Env:  []string{"GIT_PROJECT_ROOT=" + dir + "/", "GIT_HTTP_EXPORT_ALL=1"},
	}
	h.ServeHTTP(w, r)
}

// gitPath splits a request path /<project>.git/<rest>, or reports it is
// none.
func gitPath(path string) (project, rest string, ok bool) {
	i := strings.Index(path, ".git/")
	if i <= 1 || !strings.HasPrefix(path, "/") || strings.HasPrefix(path, apiPrefix+"/") {
		return "", "", false
	}
	return path[1:i], path[i+len(".git/"):], true
}
