package main

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	gl "gitlab.com/gitlab-org/api/client-go/v2"

	"github.com/nixos-fireactions/nixos-fireactions/internal/double/gitlabdouble"
)

// TestRunsExactlyMaxBuildsJobs: with --max-builds 1 the stand-in takes one
// job of two, runs its script, reports success with the log, and exits.
func TestRunsExactlyMaxBuildsJobs(t *testing.T) {
	s := gitlabdouble.New("tok")
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	s.AddProject("acme/app")
	first := s.AddJob("acme/app", "one", []string{"a"}, "echo ran-in=$(pwd)", "echo job=$CI_JOB_ID")
	second := s.AddJob("acme/app", "two", []string{"a"}, "true")
	c, _ := gl.NewClient("tok", gl.WithBaseURL(srv.URL))
	r, _, err := c.Users.CreateUserRunner(&gl.CreateUserRunnerOptions{RunnerType: gl.Ptr("instance_type"), TagList: &[]string{"a"}})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.toml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("concurrent = 1\n[[runners]]\n  name = \"fa-x\"\n  url = %q\n  token = %q\n  executor = \"shell\"\n  builds_dir = %q\n  cache_dir = %q\n",
		srv.URL, r.Token, filepath.Join(dir, "builds"), filepath.Join(dir, "cache"))), 0o600)

	o, err := parseFlags([]string{"--config", cfg, "--runner=fa-x", "--max-builds", "1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := run(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	jobs := s.Jobs()
	if j := jobs[first]; j.Status != "success" || !strings.Contains(string(j.Trace), "ran-in="+filepath.Join(dir, "builds", "acme/app")) ||
		!strings.Contains(string(j.Trace), fmt.Sprintf("job=%d", first)) {
		t.Fatalf("first job %s, log:\n%s", j.Status, j.Trace)
	}
	if jobs[second].Status != "pending" {
		t.Fatalf("a second job was taken with --max-builds 1: %s", jobs[second].Status)
	}
}

func TestFlagsAndConfigAreChecked(t *testing.T) {
	if _, err := parseFlags([]string{"--config", "x", "--runner", "y", "--max-builds", "1", "--token", "glrt-x"}); err == nil {
		t.Fatal("an unknown flag was accepted")
	}
	if _, err := parseFlags([]string{"--max-builds", "1"}); err == nil {
		t.Fatal("missing --config/--runner accepted")
	}
	if _, err := gitlabdouble.DecodeRunnerConfig([]byte("concurrent = 1\n[[runners]]\nname = \"a\"\nurl = \"u\"\ntoken = \"t\"\nexecutor = \"shell\"\nbogus = 1\n"), "a"); err == nil {
		t.Fatal("an unknown config key was accepted")
	}
}
