//go:build e2e

package e2e

import (
	"fmt"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

const fjWorkflow = `on: [push]
jobs:
  hello:
    runs-on: fireactions-fj
    steps:
      - run: echo "fireactions-vm=$(hostname) user=$(id -un)"
`

// TestForgejoJobsRunInTheirOwnMicroVMs: Forgejo Actions jobs, each in its
// own microVM, through Forgejo's API. Forgejo cannot be built here, so the
// Forgejo double (held to Forgejo's swagger) stands in front of a real
// Gitea, whose runner protocol Forgejo kept: the orchestrator detects
// Forgejo from /api/forgejo/v1/version, takes the registration token with
// Forgejo's GET, reads demand from Forgejo's job search, and the guest runs
// forgejo-runner's one-job (the stand-in, over Gitea's act_runner). Forgejo
// keeps no ephemeral runners, so the runners left after the jobs are gone
// only because the orchestrator deleted them through Forgejo's API.
func TestForgejoJobsRunInTheirOwnMicroVMs(t *testing.T) {
	r := newForgejoRig(t, "fa-fj")
	gitea, fj, state, work := r.gitea, r.fj, r.state, r.work
	cfg := r.config("fje2e", "fafj0", "10.241.0.0/24")
	cfg.Pools = []poolConfig{r.pool("fj", "fireactions-fj", 1, 2)}
	orch := r.start(cfg)
	orch.waitFor(t, 4*time.Minute, "the min_idle VM to be idle", func() bool { return countPhase(state, "idle") >= 1 })

	gitea.api(http.MethodPost, "/api/v1/user/repos", map[string]any{"name": "fj", "default_branch": "main"}, nil)
	tree := filepath.Join(work, "repo")
	writeFile(t, filepath.Join(tree, ".gitea/workflows/hello.yml"), 0o644, fjWorkflow)
	gitea.push(tree, "ci/fj", "first")
	gitea.push(tree, "ci/fj", "second")

	jobs := orch.waitJobsDone(t, 10*time.Minute, "the 2 jobs to complete", gitea, "ci/fj", 2)
	vmOf := regexp.MustCompile(`fireactions-vm=([0-9a-f]+) user=(\S+)`)
	seen := map[string]int64{}
	for _, j := range jobs {
		logText := gitea.raw(fmt.Sprintf("/api/v1/repos/ci/fj/actions/jobs/%d/logs", j.ID))
		m := vmOf.FindStringSubmatch(logText)
		if m == nil || j.Conclusion != "success" {
			t.Fatalf("job %d concluded %q; log:\n%s", j.ID, j.Conclusion, logText)
		}
		if prev, dup := seen[m[1]]; dup {
			t.Errorf("jobs %d and %d both ran in VM %s", prev, j.ID, m[1])
		}
		seen[m[1]] = j.ID
		if m[2] == "root" {
			t.Errorf("job %d ran as root", j.ID)
		}
	}
	orch.waitFor(t, 2*time.Minute, "every job's VM to be gone", func() bool { return countPhase(state, "busy") == 0 })

	orch.terminate(t)
	orch.waitExit(t, 2*time.Minute)

	// Forgejo's calls, and none of Gitea's: a POST for the token would
	// have been refused (405), /actions/jobs?status=queued is no route.
	calls := strings.Join(fj.Calls(), "\n")
	for _, want := range []string{
		"GET /api/v1/admin/actions/runners/registration-token",
		"GET /api/v1/admin/actions/runners/jobs?labels=fireactions-fj",
		"GET /api/v1/admin/actions/runners?limit=",
		"DELETE /api/v1/admin/actions/runners/",
	} {
		if !strings.Contains(calls, want) {
			t.Errorf("no call %q at the Forgejo double; calls:\n%s", want, calls)
		}
	}
	if strings.Contains(calls, "POST ") {
		t.Errorf("a POST reached the Forgejo double:\n%s", calls)
	}
	if l := logLines(orch.log, regexp.MustCompile(`level=(WARN|ERROR).*(registration token|list queued jobs|remove runner)`)); len(l) > 0 {
		t.Errorf("forge calls failed: %q", l)
	}
	assertNothingLeft(t, r.ns, gitea, state, "fafj0")
	t.Logf("FIGURE %d Forgejo jobs in %d VMs; %d REST calls at the double", len(jobs), len(seen), len(fj.Calls()))
}
