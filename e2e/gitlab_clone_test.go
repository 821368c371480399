//go:build e2e

package e2e

import (
	"strings"
	"testing"
	"time"
)

// TestGitLabJobFetchesItsRepository: a GitLab job in a QEMU guest fetches
// its project's repository as gitlab-runner's default GIT_STRATEGY=fetch
// does — git_info.repo_url with its job token, over Git's smart HTTP
// (protocol v2) from the GitLab double's git http-backend, checking out
// git_info.sha — and its script reads a file of that commit. The guest
// root has no git, so the stand-in gitlab-runner fetches with its own
// minimal upload-pack client in Go (no new dependency, nothing to add to
// the guest); real git's clone of the same URL is held to the same
// double in gitlabdouble's TestJobClonesItsRepositoryOverSmartHTTP.
// Positive control: a job whose repo_url carries a token that is not its
// job token is refused (401), fails, and its script never runs.
func TestGitLabJobFetchesItsRepository(t *testing.T) {
	r := newGitLabRig(t, "glcl")
	gl, state := r.gl, r.state
	cidr := "10.250.0.0/24"
	gl.ExternalURL = "http://" + gateway(t, cidr) + ":" + glPort
	marker := "cloned-" + randHex(t)
	head, err := gl.InitRepo(t.TempDir(), "acme/app", map[string]string{"ci/expected.txt": marker + "\n", "README.md": "acme/app\n"})
	if err != nil {
		t.Fatal(err)
	}
	good := gl.AddJob("acme/app", "reads-its-repo", []string{glTag}, glJobScript, "cat ci/expected.txt")
	bad := gl.AddJob("acme/app", "wrong-clone-token", []string{glTag}, glJobScript, "echo script-ran")
	gl.BreakCloneToken(bad)

	cfg := r.config("glclone", "faglc0", cidr)
	cfg.Pools = []poolConfig{r.pool("glc", []string{glTag}, 2)}
	orch := r.start(cfg)
	orch.waitFor(t, 6*time.Minute, "both jobs to end", func() bool {
		j := gl.Jobs()
		done := func(s string) bool { return s == "success" || s == "failed" || s == "canceled" }
		return done(j[good].Status) && done(j[bad].Status)
	})
	jobs := gl.Jobs()
	g, b := string(jobs[good].Trace), string(jobs[bad].Trace)
	t.Logf("the job's log:\n%s", g)
	if jobs[good].Status != "success" || !strings.Contains(g, marker+"\n") || !strings.Contains(g, "Checking out "+head[:8]) {
		t.Fatalf("the job that reads its repository ended %s:\n%s", jobs[good].Status, g)
	}
	t.Logf("the wrong-token job's log:\n%s", b)
	if jobs[bad].Status != "failed" || !strings.Contains(b, "HTTP 401") || strings.Contains(b, "script-ran") {
		t.Fatalf("positive control: the job whose repo_url has a wrong token ended %s:\n%s", jobs[bad].Status, b)
	}
	checkJobsRanAlone(t, gl, []int64{good}) // the other's script never ran to say where
	if jobs[bad].RunnerID == jobs[good].RunnerID {
		t.Errorf("both jobs ran on runner %d", jobs[good].RunnerID)
	}
	fetched := 0
	for _, c := range gl.Calls() {
		if c == "POST /acme/app.git/git-upload-pack" {
			fetched++
		}
	}
	if fetched < 2 { // ls-refs and fetch, of the good job
		t.Fatalf("%d upload-pack requests reached the double, want ls-refs and fetch", fetched)
	}
	orch.waitFor(t, 2*time.Minute, "VMs and runners to be gone", func() bool {
		return len(vmDirs(state)) == 0 && len(gl.Runners()) == 0
	})
	for _, tok := range gl.IssuedTokens() {
		if strings.Contains(g+b, tok) {
			t.Errorf("a job log holds a token (%.10s…)", tok)
		}
	}
	orch.terminate(t)
	orch.waitExit(t, time.Minute)
}
