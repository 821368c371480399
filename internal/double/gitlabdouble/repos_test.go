package gitlabdouble

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	gl "gitlab.com/gitlab-org/api/client-go/v2"
)

// git runs git with no user or system configuration and returns its
// output and error.
func git(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "HOME="+t.TempDir(), "GIT_TERMINAL_PROMPT=0")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// runningRepoJob is a double serving project acme/app with a repository
// of one file README.md (content), and a job of it running on an
// instance runner; it returns the repository's head and the runner.
func runningRepoJob(t *testing.T, content string) (*Server, string, *RunnerClient, *JobPayload) {
	t.Helper()
	s, srv, c := newDouble(t)
	s.ExternalURL = srv.URL
	s.AddProject("acme/app")
	head, err := s.InitRepo(t.TempDir(), "acme/app", map[string]string{"README.md": content})
	if err != nil {
		t.Fatal(err)
	}
	s.AddJob("acme/app", "build", []string{"a"}, "true")
	r, _, err := c.Users.CreateUserRunner(&gl.CreateUserRunnerOptions{RunnerType: gl.Ptr("instance_type"), TagList: &[]string{"a"}})
	if err != nil {
		t.Fatal(err)
	}
	rc := &RunnerClient{URL: srv.URL, Token: r.Token}
	job, err := rc.RequestJob(context.Background(), nil)
	if err != nil || job == nil {
		t.Fatalf("request job: %v, %v", job, err)
	}
	return s, head, rc, job
}

// TestJobClonesItsRepositoryOverSmartHTTP: the repo_url of a job's
// git_info clones with the real git client (smart HTTP, git
// http-backend) and has the job's SHA; without the job token, with
// another job's, or once the job ended, the clone is refused; a push is
// refused.
func TestJobClonesItsRepositoryOverSmartHTTP(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Fatal("git is needed: it is in Debian's git package")
	}
	s, head, rc, job := runningRepoJob(t, "hello from acme/app\n")
	s.AddProject("acme/other")
	if job.GitInfo.Sha != head {
		t.Fatalf("git_info.sha %s, want the repository's main %s", job.GitInfo.Sha, head)
	}
	dir := filepath.Join(t.TempDir(), "clone")
	if out, err := git(t, "clone", "-q", job.GitInfo.RepoURL, dir); err != nil {
		t.Fatalf("git clone of the job's repo_url: %v\n%s", err, out)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "README.md")); err != nil || string(b) != "hello from acme/app\n" {
		t.Fatalf("cloned README: %q, %v", b, err)
	}
	if out, _ := git(t, "-C", dir, "rev-parse", "HEAD"); strings.TrimSpace(out) != head {
		t.Fatalf("cloned HEAD %s, want %s", out, head)
	}

	u, _ := url.Parse(job.GitInfo.RepoURL)
	refused := func(what, repoURL string) {
		t.Helper()
		if out, err := git(t, "ls-remote", repoURL); err == nil {
			t.Errorf("%s: ls-remote succeeded:\n%s", what, out)
		}
	}
	anon := *u
	anon.User = nil
	refused("no credentials", anon.String())
	wrong := *u
	wrong.User = url.UserPassword("gitlab-ci-token", "glcbt-wrong")
	refused("a wrong job token", wrong.String())
	other := *u
	other.Path = "/acme/other.git"
	refused("another project", other.String())
	must := func(out string, err error) {
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
	}
	must(git(t, "-C", dir, "-c", "user.name=x", "-c", "user.email=x@x", "commit", "-q", "--allow-empty", "-m", "push"))
	if out, err := git(t, "-C", dir, "push", "-q", "origin", "HEAD:main"); err == nil {
		t.Errorf("a push with the job token succeeded:\n%s", out)
	}
	if code, err := rc.UpdateJob(context.Background(), job.ID, job.Token, "success", 0, nil); err != nil || code != 200 {
		t.Fatalf("finish job: %d, %v", code, err)
	}
	refused("the token of a job that ended", job.GitInfo.RepoURL)
}

// TestSmartHTTPAsGitLabServesIt: info/refs answers protocol v2 to a
// client that asks for it (Git-Protocol: version=2, as git ≥ 2.26 does)
// and v0 to one that does not, as GitLab does; without credentials it
// is 401 with a Basic challenge (git then asks for credentials).
func TestSmartHTTPAsGitLabServesIt(t *testing.T) {
	s, head, _, job := runningRepoJob(t, "b")
	srv := struct{ URL string }{s.ExternalURL}
	get := func(user bool, proto string) (int, string, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/acme/app.git/info/refs?service=git-upload-pack", nil)
		if user {
			req.SetBasicAuth("gitlab-ci-token", job.Token)
		}
		if proto != "" {
			req.Header.Set("Git-Protocol", proto)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("WWW-Authenticate"), string(b)
	}
	if code, challenge, _ := get(false, "version=2"); code != http.StatusUnauthorized || !strings.HasPrefix(challenge, "Basic ") {
		t.Fatalf("without credentials: %d %q, want 401 with a Basic challenge", code, challenge)
	}
	if code, _, body := get(true, "version=2"); code != 200 || !strings.Contains(body, "version 2\n") || !strings.Contains(body, "ls-refs") {
		t.Fatalf("v2 asked: %d\n%s", code, body)
	}
	if code, _, body := get(true, ""); code != 200 || !strings.Contains(body, "# service=git-upload-pack\n") ||
		!strings.Contains(body, head+" HEAD\x00") || strings.Contains(body, "version 2") {
		t.Fatalf("v0 (no Git-Protocol): %d\n%q", code, body)
	}
	for _, v := range []string{"0", "2"} {
		if out, err := git(t, "-c", "protocol.version="+v, "ls-remote", job.GitInfo.RepoURL); err != nil || !strings.Contains(out, head) {
			t.Fatalf("git ls-remote over protocol v%s: %v\n%s", v, err, out)
		}
	}
}
