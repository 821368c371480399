//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// giteaServer is a real Gitea (built by scripts/build-peers.sh) running in
// the test's namespace, with one admin user "ci" and its API token.
type giteaServer struct {
	t     *testing.T
	ns    *testNetns
	url   string // as seen from inside the namespace
	token string
	http  *http.Client
	dir   string
}

const giteaPort = "3000"

// startGitea starts Gitea in ns; extraINI, if any, is appended to its
// app.ini (a section named again adds to it, a key set again wins).
func startGitea(t *testing.T, ns *testNetns, cache string, extraINI ...string) *giteaServer {
	t.Helper()
	bin := filepath.Join(cache, "gitea-v1.26.0", "gitea")
	static := filepath.Join(cache, "gitea-v1.26.0", "static")
	requireFile(t, bin, "Gitea build (scripts/build-peers.sh)")
	dir := t.TempDir()
	ini := filepath.Join(dir, "app.ini")
	writeFile(t, ini, 0o600, fmt.Sprintf(`RUN_MODE = prod
RUN_USER = root
WORK_PATH = %[1]s
I_AM_BEING_UNSAFE_RUNNING_AS_ROOT = true
[server]
HTTP_ADDR = 0.0.0.0
HTTP_PORT = %[3]s
ROOT_URL = http://127.0.0.1:%[3]s/
DISABLE_SSH = true
OFFLINE_MODE = true
STATIC_ROOT_PATH = %[2]s
[database]
DB_TYPE = sqlite3
PATH = %[1]s/data/gitea.db
[security]
INSTALL_LOCK = true
SECRET_KEY = e2e-not-secret
[repository]
ROOT = %[1]s/repos
DEFAULT_BRANCH = main
[actions]
ENABLED = true
[log]
MODE = console
LEVEL = info
[cron.update_checker]
ENABLED = false
[webhook]
ALLOWED_HOST_LIST = loopback
`, dir, static, giteaPort)+strings.Join(extraINI, "\n"))
	g := func(args ...string) string {
		return run(t, bin, append([]string{"--config", ini, "--work-path", dir}, args...)...)
	}
	g("migrate")
	g("admin", "user", "create", "--username", "ci", "--password", "ci-Passw0rd!", "--email", "ci@example.invalid", "--admin", "--must-change-password=false")
	out := strings.TrimSpace(g("admin", "user", "generate-access-token", "--username", "ci", "--token-name", "e2e", "--scopes", "all", "--raw"))
	lines := strings.Split(out, "\n")
	token := strings.TrimSpace(lines[len(lines)-1])

	logf, err := os.Create(filepath.Join(dir, "web.log"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := ns.command(ctx, bin, "--config", ini, "--work-path", dir, "web")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("start gitea: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("gitea log, without the REST API's GETs (last 8 KiB):\n%s", tail(withoutRESTGets(b), 8<<10))
		}
	})
	s := &giteaServer{t: t, ns: ns, url: "http://127.0.0.1:" + giteaPort, token: token, http: ns.httpClient(), dir: dir}
	deadline := time.Now().Add(60 * time.Second)
	for {
		if resp, err := s.http.Get(s.url + "/api/v1/version"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(dir, "web.log"))
			t.Fatalf("gitea did not answer within 60s; log:\n%s", b)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return s
}

// api calls Gitea's REST API as the admin user and decodes into out.
func (s *giteaServer) api(method, path string, body any, out any) int {
	s.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, s.url+path, rd)
	req.Header.Set("Authorization", "token "+s.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.http.Do(req)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		s.t.Fatalf("%s %s: %s: %s", method, path, resp.Status, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			s.t.Fatalf("%s %s: decode: %v: %s", method, path, err, b)
		}
	}
	return resp.StatusCode
}

// raw fetches a text resource (job logs).
func (s *giteaServer) raw(path string) string {
	s.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, s.url+path, nil)
	req.Header.Set("Authorization", "token "+s.token)
	resp, err := s.http.Do(req)
	if err != nil {
		s.t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

type run_ struct {
	ID         int64  `json:"id"`
	Status     string `json:"status"`
	Conclusion string `json:"conclusion"`
	Event      string `json:"event"`
	Path       string `json:"path"`
}

type job struct {
	ID         int64     `json:"id"`
	RunID      int64     `json:"run_id"`
	Status     string    `json:"status"`
	Conclusion string    `json:"conclusion"`
	RunnerName string    `json:"runner_name"`
	CreatedAt  time.Time `json:"created_at"`
	StartedAt  time.Time `json:"started_at"`
}

func (s *giteaServer) runs(repo string) []run_ {
	var r struct {
		Runs []run_ `json:"workflow_runs"`
	}
	s.api(http.MethodGet, "/api/v1/repos/"+repo+"/actions/runs?limit=50", nil, &r)
	return r.Runs
}

func (s *giteaServer) jobs(repo string) []job {
	var r struct {
		Jobs []job `json:"jobs"`
	}
	s.api(http.MethodGet, "/api/v1/repos/"+repo+"/actions/jobs?limit=50", nil, &r)
	return r.Jobs
}

func (s *giteaServer) runnerCount() int {
	var r struct {
		Total int `json:"total_count"`
	}
	s.api(http.MethodGet, "/api/v1/admin/actions/runners", nil, &r)
	return r.Total
}

func (s *giteaServer) registrationToken() string {
	var r struct {
		Token string `json:"token"`
	}
	s.api(http.MethodPost, "/api/v1/admin/actions/runners/registration-token", nil, &r)
	return r.Token
}

// addHook makes a webhook of repo sending workflow_job events as JSON to
// url, signed with secret, and returns its id.
func (s *giteaServer) addHook(repo, url, secret string) int64 {
	s.t.Helper()
	var h struct {
		ID int64 `json:"id"`
	}
	s.api(http.MethodPost, "/api/v1/repos/"+repo+"/hooks", map[string]any{
		"type": "gitea", "active": true, "events": []string{"workflow_job"},
		"config": map[string]string{"url": url, "content_type": "json", "secret": secret},
	}, &h)
	return h.ID
}

// push commits the files in worktree and pushes them to repo from inside
// the namespace.
func (s *giteaServer) push(worktree, repo, msg string) {
	s.t.Helper()
	git := func(args ...string) {
		cmd := exec.Command("git", append([]string{"-C", worktree, "-c", "user.name=ci", "-c", "user.email=ci@example.invalid"}, args...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			s.t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	if _, err := os.Stat(filepath.Join(worktree, ".git")); err != nil {
		git("init", "-q", "-b", "main")
	}
	git("add", "-A")
	git("commit", "-q", "--allow-empty", "-m", msg)
	remote := fmt.Sprintf("http://ci:%s@127.0.0.1:%s/%s.git", s.token, giteaPort, repo)
	cmd := s.ns.command(context.Background(), "git", "-C", worktree, "push", "-q", remote, "main")
	if out, err := cmd.CombinedOutput(); err != nil {
		s.t.Fatalf("git push: %v\n%s", err, out)
	}
}

func requireFile(t *testing.T, path, what string) {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("%s missing at %s (make test installs it): %v", what, path, err)
	}
}

func writeFile(t *testing.T, path string, mode os.FileMode, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
}

// startGiteaFor starts Gitea in ns for an orchestrator test working in
// work: it returns the server, the file holding its API token (mode 600),
// and where the orchestrator's state directory and config file go.
func startGiteaFor(t *testing.T, ns *testNetns, cache, work string, extraINI ...string) (g *giteaServer, tokenFile, state, cfgPath string) {
	t.Helper()
	g = startGitea(t, ns, cache, extraINI...)
	tokenFile = filepath.Join(work, "gitea-token")
	writeFile(t, tokenFile, 0o600, g.token+"\n")
	return g, tokenFile, filepath.Join(work, "state"), filepath.Join(work, "fireactions.yaml")
}

// tail is the last n bytes of b, from a line start.
func tail(b []byte, n int) []byte {
	if len(b) <= n {
		return b
	}
	b = b[len(b)-n:]
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		b = b[i+1:]
	}
	return b
}

// withoutRESTGets drops the log lines of GET requests to the REST API: the
// tests' and the orchestrator's polling, which would bury the runners'
// calls.
func withoutRESTGets(log []byte) []byte {
	var out []byte
	for _, l := range bytes.SplitAfter(log, []byte("\n")) {
		if !bytes.Contains(l, []byte("completed GET /api/v1/")) {
			out = append(out, l...)
		}
	}
	return out
}

// waitJobFailedAtGitea is the check of a job the orchestrator failed
// because its runner died (at died, seen as runnerDeath): the one job of
// repo completes at Gitea as a failure within 2 minutes, and within 30
// seconds of the death (the orchestrator told Gitea; Gitea's own
// clean-up takes minutes), its log says why (why, the start of the line
// the orchestrator wrote into it), and the orchestrator logs that it
// failed the job of pool's VM vm. It returns the job and the pattern of
// that log line.
func (o *orchestrator) waitJobFailedAtGitea(t *testing.T, g *giteaServer, repo string, died time.Time, runnerDeath, why, pool, vm string) (job, *regexp.Regexp) {
	t.Helper()
	failed := o.waitJobsDone(t, 2*time.Minute, "the job to fail at Gitea", g, repo, 1)[0]
	took := time.Since(died)
	t.Logf("FIGURE %s -> job completed at Gitea: %s", runnerDeath, took.Round(100*time.Millisecond))
	if failed.Conclusion != "failure" {
		t.Fatalf("the job concluded %q, want failure", failed.Conclusion)
	}
	if took > 30*time.Second {
		t.Errorf("the job was failed %s after its runner died; want seconds (Gitea's own clean-up takes minutes)", took)
	}
	logText := g.raw(fmt.Sprintf("/api/v1/repos/%s/actions/jobs/%d/logs", repo, failed.ID))
	if !strings.Contains(logText, why) {
		t.Errorf("the job's log does not say why it failed (%q):\n%s", why, tail([]byte(logText), 4<<10))
	}
	// The line is written once the forge answered, which may be just
	// after Gitea shows the job failed.
	failedLine := regexp.MustCompile(`level=WARN msg="job failed at the forge" pool=` + pool + ` vm=` + vm)
	o.waitFor(t, 30*time.Second, "the log line saying the job was failed", func() bool { return len(logLines(o.log, failedLine)) > 0 })
	return failed, failedLine
}
