package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nixos-fireactions/nixos-fireactions/internal/double/gitlabdouble"
)

// TestFetchesTheJobsRepositoryAsGitStrategyFetch: the stand-in fetches
// the job's repository from git_info.repo_url with its job token (smart
// HTTP v2 against git http-backend behind the double), checks out
// git_info.sha, and the script reads a file of it; with a token in the
// repo_url that is not the job's, the fetch is refused (401), the job
// fails and its script never runs.
func TestFetchesTheJobsRepositoryAsGitStrategyFetch(t *testing.T) {
	s := gitlabdouble.New("tok")
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	s.ExternalURL = srv.URL
	s.AddProject("acme/app")
	head, err := s.InitRepo(t.TempDir(), "acme/app", map[string]string{
		"README.md": "fetched-readme\n", "sub/dir/data.txt": "fetched-nested\n",
	})
	if err != nil {
		t.Fatal(err)
	}
	good := s.AddJob("acme/app", "reads", []string{"a"}, "cat README.md sub/dir/data.txt", "echo left-over > junk", "echo script-ran")
	bad := s.AddJob("acme/app", "wrong-token", []string{"a"}, "echo script-ran")
	s.BreakCloneToken(bad)
	again := s.AddJob("acme/app", "reads-again", []string{"a"}, "cat README.md", "test ! -e junk")
	cfg, _ := newRunnerConfig(t, s, srv.URL)
	o, err := parseFlags([]string{"--config", cfg, "--runner", "fa-x", "--max-builds", "3"})
	must(t, err)
	o.pollEvery = 0
	must(t, run(context.Background(), o))

	jobs := s.Jobs()
	g := string(jobs[good].Trace)
	if jobs[good].Status != "success" || !strings.Contains(g, "fetched-readme\nfetched-nested\n") ||
		!strings.Contains(g, "Checking out "+head[:8]) || !strings.Contains(g, fmt.Sprintf("refs/pipelines/%d -> refs/pipelines/%d", good, good)) ||
		!strings.Contains(g, "refs/heads/main -> refs/remotes/origin/main") {
		t.Fatalf("the job that fetches its repository ended %s:\n%s", jobs[good].Status, g)
	}
	b := string(jobs[bad].Trace)
	if jobs[bad].Status != "failed" || !strings.Contains(b, "authentication failed") || !strings.Contains(b, "HTTP 401") {
		t.Fatalf("positive control: the job whose repo_url has a wrong token ended %s:\n%s", jobs[bad].Status, b)
	}
	if strings.Contains(b, "script-ran") {
		t.Fatalf("the script ran although its sources were not fetched:\n%s", b)
	}
	if !strings.Contains(g, "$ echo left-over > junk") {
		t.Fatalf("positive control: the first job did not leave its junk:\n%s", g)
	}
	if a := jobs[again]; a.Status != "success" || !strings.Contains(string(a.Trace), "fetched-readme") {
		t.Fatalf("a second fetch into the same builds directory ended %s:\n%s", a.Status, a.Trace)
	}
	if strings.Contains(g+b, "glcbt-") {
		t.Fatalf("a job token is in a job log")
	}
}

// gitRun runs git in dir without user or system configuration.
func gitRun(t *testing.T, dir string, stdin []byte, args ...string) []byte {
	t.Helper()
	cmd := exec.Command("git", append([]string{"-C", dir}, args...)...)
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "HOME="+dir, "GIT_AUTHOR_NAME=a", "GIT_AUTHOR_EMAIL=a@a",
		"GIT_COMMITTER_NAME=a", "GIT_COMMITTER_EMAIL=a@a")
	cmd.Stdin = bytes.NewReader(stdin)
	var errb bytes.Buffer
	cmd.Stderr = &errb
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, errb.String())
	}
	return out
}

// TestReadPackResolvesDeltas: packs git made of five commits of a file
// changed by one line each (so deltas chain on deltas, checked with git
// verify-pack), with ofs-deltas (--delta-base-offset, as a fetch asks
// for) and with ref-deltas, read back to exactly the objects git lists,
// and every commit checks out to what was committed; a pack with one
// byte changed is refused.
func TestReadPackResolvesDeltas(t *testing.T) {
	dir := t.TempDir()
	gitRun(t, dir, nil, "init", "-q", "-b", "main")
	var big strings.Builder
	for i := 0; i < 3000; i++ {
		fmt.Fprintf(&big, "line %d of a file git stores as a delta\n", i)
	}
	content, commits := big.String(), map[string]string{}
	for i := range 5 {
		content = strings.Replace(content, fmt.Sprintf("line %d ", 500*(i+1)), fmt.Sprintf("LINE %d ", 500*(i+1)), 1)
		must(t, os.WriteFile(filepath.Join(dir, "big.txt"), []byte(content), 0o644))
		gitRun(t, dir, nil, "add", "-A")
		gitRun(t, dir, nil, "commit", "-q", "-m", fmt.Sprint("commit ", i))
		commits[strings.TrimSpace(string(gitRun(t, dir, nil, "rev-parse", "HEAD")))] = content
	}
	want := strings.Fields(string(gitRun(t, dir, nil, "rev-list", "--objects", "--no-object-names", "HEAD")))
	for _, tc := range []struct {
		name  string
		flags []string
		kind  byte // the delta kind the pack must hold
	}{
		{"ofs-delta", []string{"--delta-base-offset"}, ofsDelta},
		{"ref-delta", nil, refDelta},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pack := gitRun(t, dir, []byte("HEAD\n"), append([]string{"pack-objects", "--stdout", "--revs", "-q"}, tc.flags...)...)
			packFile := filepath.Join(t.TempDir(), "test.pack")
			must(t, os.WriteFile(packFile, pack, 0o644))
			gitRun(t, dir, nil, "index-pack", packFile)
			verify := string(gitRun(t, dir, nil, "verify-pack", "-v", strings.TrimSuffix(packFile, ".pack")+".idx"))
			if !strings.Contains(verify, "chain length = 2") {
				t.Fatalf("positive control: git made no delta on a delta, the test proves nothing:\n%s", verify)
			}
			entries, _, _, err := parsePack(pack, maxUnpacked)
			must(t, err)
			kinds := map[byte]int{}
			for _, e := range entries {
				kinds[e.kind]++
			}
			if kinds[tc.kind] < 2 || kinds[ofsDelta]+kinds[refDelta] != kinds[tc.kind] {
				t.Fatalf("positive control: the pack's entry kinds are %v, want deltas all of kind %d", kinds, tc.kind)
			}
			objs, err := readPack(pack, maxUnpacked)
			must(t, err)
			if len(objs) != len(want) {
				t.Fatalf("%d objects read, git lists %d", len(objs), len(want))
			}
			for _, id := range want {
				if _, ok := objs[id]; !ok {
					t.Fatalf("object %s missing", id)
				}
			}
			for sha, content := range commits {
				out := filepath.Join(t.TempDir(), "co")
				must(t, checkout(objs, sha, out, budget{files: 10, bytes: 1 << 20}))
				if b, _ := os.ReadFile(filepath.Join(out, "big.txt")); string(b) != content {
					t.Fatalf("commit %s checked out wrong", sha[:8])
				}
			}
			bad := append([]byte(nil), pack...)
			bad[len(bad)/2] ^= 1
			if _, err := readPack(bad, maxUnpacked); err == nil {
				t.Fatal("a corrupted pack was read")
			}
		})
	}
}
