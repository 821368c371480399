package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

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
	if j := jobs[first]; j.Status != "success" || !strings.Contains(string(j.Trace), "ran-in="+filepath.Join(dir, "builds", "app")) ||
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

// newRunnerConfig creates an instance runner at the double and writes its
// config.toml with check_interval 1.
func newRunnerConfig(t *testing.T, s *gitlabdouble.Server, url string) (string, *gl.UserRunner) {
	t.Helper()
	c, _ := gl.NewClient("tok", gl.WithBaseURL(url))
	r, _, err := c.Users.CreateUserRunner(&gl.CreateUserRunnerOptions{RunnerType: gl.Ptr("instance_type"), TagList: &[]string{"a"}})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.toml")
	must(t, os.WriteFile(cfg, []byte(fmt.Sprintf("concurrent = 1\ncheck_interval = 1\n[[runners]]\n  name = \"fa-x\"\n  url = %q\n  token = %q\n  executor = \"shell\"\n  builds_dir = %q\n",
		url, r.Token, filepath.Join(dir, "builds"))), 0o600))
	return cfg, r
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// requestTimes are when the double saw POST /jobs/request, from a
// handler wrapper.
type requestTimes struct {
	mu sync.Mutex
	at []time.Time
}

// TestPacedAsGitLabRunner171: with check_interval = 1 the stand-in asks
// for a job every 3 s, never calls /runners/verify, and once its runner
// is deleted (403) it sleeps instead of exiting.
func TestPacedAsGitLabRunner171(t *testing.T) {
	s := gitlabdouble.New("tok")
	var rt requestTimes
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/api/v4/jobs/request" {
			rt.mu.Lock()
			rt.at = append(rt.at, time.Now())
			rt.mu.Unlock()
		}
		s.Handler().ServeHTTP(w, r)
	}))
	defer srv.Close()
	s.AddProject("acme/app")
	cfg, r := newRunnerConfig(t, s, srv.URL)
	o, err := parseFlags([]string{"--config", cfg, "--runner", "fa-x", "--max-builds", "1"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 6500*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- run(ctx, o) }()
	// Two idle polls, then the runner is deleted: the next request is
	// refused and the stand-in must stay.
	time.Sleep(3500 * time.Millisecond)
	c, _ := gl.NewClient("tok", gl.WithBaseURL(srv.URL))
	if _, err := c.Runners.DeleteRegisteredRunnerByID(r.ID); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		t.Fatalf("run ended after its runner's deletion (%v); gitlab-runner 17.1 sleeps 300 s", err)
	case <-time.After(2500 * time.Millisecond):
	}
	<-done
	rt.mu.Lock()
	at := rt.at
	rt.mu.Unlock()
	if len(at) != 3 {
		t.Fatalf("%d job requests in 6.5 s, want 3 (at 0, 3 and 6 s; none during the 300 s sleep after the 403 at 6 s)", len(at))
	}
	for i := 1; i < len(at); i++ {
		if gap := at[i].Sub(at[i-1]); gap < 2900*time.Millisecond || gap > 3500*time.Millisecond {
			t.Errorf("request %d came %s after the previous one, want 3 s (check_interval 1 is not what run-single follows)", i, gap)
		}
	}
	for _, call := range s.Calls() {
		if strings.Contains(call, "/runners/verify") {
			t.Fatalf("the stand-in called %s; run-single does not", call)
		}
	}
}
