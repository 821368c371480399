// Command gitlab-runner is a stand-in for GitLab's runner in the
// end-to-end tests, where the real one cannot be fetched: it accepts the
// `run-single` arguments fireactions' guest plan passes, reads the runner
// from the config.toml the plan writes (strictly: an unknown key is an
// error), and speaks the runner job protocol to the GitLab double with the
// runner's own token. It fetches each job's repository as gitlab-runner's
// default GIT_STRATEGY=fetch does (gitfetch.go: Git's smart HTTP v2 in
// Go, since the guest has no git; GIT_STRATEGY=none skips it), runs the
// job's script with /bin/sh in the checked-out builds directory, sends
// the log, reports success or failure, and exits after
// --max-builds jobs, printing the lines the real runner prints when it
// starts and when it receives a job. It keeps gitlab-runner 17.1's pace:
// no POST /runners/verify, a job request every 3 s whatever
// check_interval says, and a 300 s sleep (not an exit) after GitLab
// refuses its token (403, its runner deleted).
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/internal/double/gitlabdouble"
)

// options are the run-single flags this stand-in understands, and its
// pace.
type options struct {
	config, runner string
	maxBuilds      int
	waitTimeout    int
	// pollEvery is the wait between job requests: gitlab-runner 17.1's
	// run-single waits 3 s, whatever check_interval says.
	pollEvery time.Duration
	// forbiddenWait is how long it sleeps after a 403 to a job request
	// (its runner deleted): 17.1 sleeps 300 s and asks again; it does
	// not exit.
	forbiddenWait time.Duration
}

// gitlab-runner 17.1's pace in run-single.
const (
	runSinglePoll  = 3 * time.Second
	forbiddenPause = 300 * time.Second
)

// version is the gitlab-runner release the stand-in behaves as.
const version = "17.1.0"

func main() {
	if len(os.Args) == 2 && (os.Args[1] == "--version" || os.Args[1] == "-v") {
		// As gitlab-runner prints it.
		fmt.Printf("Version:      %s\nGit revision: stand-in\nGit branch:   stand-in\nGO version:   stand-in\nBuilt:        stand-in\nOS/Arch:      linux/amd64\n", version)
		return
	}
	if len(os.Args) < 2 || os.Args[1] != "run-single" {
		fmt.Fprintln(os.Stderr, "usage: gitlab-runner run-single --config FILE --runner NAME [--max-builds N] [--wait-timeout SECONDS]")
		os.Exit(2)
	}
	o, err := parseFlags(os.Args[2:])
	if err != nil {
		logf("FATAL: %v", err)
		os.Exit(2)
	}
	if err := run(context.Background(), o); err != nil {
		logf("FATAL: %v", err)
		os.Exit(1)
	}
}

func parseFlags(args []string) (options, error) {
	o := options{pollEvery: runSinglePoll, forbiddenWait: forbiddenPause}
	for i := 0; i < len(args); i++ {
		name, val, hasVal := strings.Cut(args[i], "=")
		if !hasVal {
			if i+1 >= len(args) {
				return o, fmt.Errorf("flag %s needs a value", name)
			}
			i++
			val = args[i]
		}
		var err error
		switch name {
		case "--config", "-c":
			o.config = val
		case "--runner", "-r":
			o.runner = val
		case "--max-builds":
			o.maxBuilds, err = strconv.Atoi(val)
		case "--wait-timeout":
			o.waitTimeout, err = strconv.Atoi(val)
		default:
			return o, fmt.Errorf("flag provided but not defined: %s", name)
		}
		if err != nil {
			return o, fmt.Errorf("flag %s: %w", name, err)
		}
	}
	if o.config == "" || o.runner == "" {
		return o, errors.New("--config and --runner are required")
	}
	return o, nil
}

func run(ctx context.Context, o options) error {
	data, err := os.ReadFile(o.config)
	if err != nil {
		return err
	}
	rc, err := gitlabdouble.DecodeRunnerConfig(data, o.runner)
	if err != nil {
		return err
	}
	client := &http.Client{Timeout: 60 * time.Second}
	if rc.TLSCAFile != "" {
		pem, err := os.ReadFile(rc.TLSCAFile)
		if err != nil {
			return err
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pem)
		client.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	}
	var sid [6]byte
	_, _ = rand.Read(sid[:])
	c := &gitlabdouble.RunnerClient{URL: rc.URL, Token: rc.Token, SystemID: "s_" + hex.EncodeToString(sid[:]), HTTP: client}
	short := shortToken(rc.Token)
	// run-single does not call POST /runners/verify: it goes straight
	// to asking for jobs.
	logf("Starting runner for %s with token %s ...", rc.URL, short)
	for _, d := range []string{rc.BuildsDir, rc.CacheDir} {
		if d != "" {
			if err := os.MkdirAll(d, 0o700); err != nil {
				return err
			}
		}
	}
	info := map[string]any{"name": "gitlab-runner", "version": "stand-in", "executor": rc.Executor, "platform": "linux", "architecture": "amd64"}
	builds, last := 0, time.Now()
	for o.maxBuilds == 0 || builds < o.maxBuilds {
		if o.waitTimeout > 0 && time.Since(last) > time.Duration(o.waitTimeout)*time.Second {
			logf("This runner has not received a job in %d seconds, so now exiting", o.waitTimeout)
			return nil
		}
		job, err := c.RequestJob(ctx, info)
		if errors.Is(err, gitlabdouble.ErrForbidden) {
			logf("ERROR: Checking for jobs... forbidden                 runner=%s", short)
			if err := sleep(ctx, o.forbiddenWait); err != nil {
				return err
			}
			continue
		}
		if err != nil || job == nil {
			if err != nil {
				logf("WARNING: Checking for jobs... failed  error=%v", err)
			}
			if err := sleep(ctx, o.pollEvery); err != nil {
				return err
			}
			continue
		}
		logf("Checking for jobs... received                        job=%d repo_url=%s runner=%s", job.ID, cleanURL(job.GitInfo.RepoURL), short)
		if err := runJob(ctx, c, rc, job); err != nil {
			logf("ERROR: Job failed: %v  job=%d", err, job.ID)
		}
		builds++
		last = time.Now()
	}
	logf("This runner has processed its build limit, so now exiting")
	return nil
}

// sleep waits d, or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// runJob runs one job's script and reports it to GitLab.
func runJob(ctx context.Context, c *gitlabdouble.RunnerClient, rc gitlabdouble.RunnerConfig, job *gitlabdouble.JobPayload) error {
	start := time.Now()
	if _, err := c.UpdateJob(ctx, job.ID, job.Token, "running", 0, nil); err != nil {
		return err
	}
	// The job's deadline (runner_info.timeout) bounds its fetch and
	// script; its final report is made after it, under ctx.
	timeout := time.Duration(job.RunnerInfo.Timeout) * time.Second
	if timeout <= 0 {
		timeout = time.Hour
	}
	jctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var log bytes.Buffer
	fmt.Fprintf(&log, "Running with gitlab-runner stand-in on %s\nUsing %s executor...\n", hostname(), rc.Executor)
	exit := 0
	dir, err := projectDir(rc.BuildsDir, job.JobInfo.ProjectName)
	if err == nil {
		err = os.MkdirAll(dir, 0o700)
	}
	if err != nil {
		fmt.Fprintf(&log, "ERROR: %v\n", err)
		exit = 1
	}
	env := os.Environ()
	for _, v := range job.Variables {
		env = append(env, v.Key+"="+v.Value)
	}
	env = append(env, "CI_BUILDS_DIR="+rc.BuildsDir, "CI_PROJECT_DIR="+dir)
	strategy := "fetch"
	for _, v := range job.Variables {
		if v.Key == "GIT_STRATEGY" {
			strategy = v.Value
		}
	}
	switch {
	case exit != 0:
	case strategy == "none":
		fmt.Fprintf(&log, "Skipping Git repository setup\n")
	default:
		if err := fetchSources(jctx, gitClient(c), job.GitInfo.RepoURL, job.GitInfo.Refspecs, job.GitInfo.Sha, job.GitInfo.Depth, dir, &log); err != nil {
			// As git and gitlab-runner print a failed fetch: the job
			// fails before its script.
			fmt.Fprintf(&log, "fatal: %v\nERROR: Job failed: exit code 128\n", err)
			exit = 128
		}
	}
	for _, step := range job.Steps {
		if exit != 0 {
			break
		}
		for _, line := range step.Script {
			fmt.Fprintf(&log, "$ %s\n", line)
			cmd := exec.CommandContext(jctx, "/bin/sh", "-c", line)
			cmd.Dir, cmd.Env, cmd.Stdout, cmd.Stderr = dir, env, &log, &log
			if err := cmd.Run(); err != nil {
				var ee *exec.ExitError
				exit = 1
				if errors.As(err, &ee) {
					exit = ee.ExitCode()
				}
				fmt.Fprintf(&log, "ERROR: Job failed: exit code %d\n", exit)
				break
			}
		}
	}
	state := "success"
	if exit == 0 {
		fmt.Fprintf(&log, "Job succeeded\n")
	} else {
		state = "failed"
	}
	if _, err := c.PatchTrace(ctx, job.ID, job.Token, 0, log.Bytes()); err != nil {
		return err
	}
	for i := 0; ; i++ {
		code, err := c.UpdateJob(ctx, job.ID, job.Token, state, exit, log.Bytes())
		if err != nil {
			return err
		}
		if code == http.StatusOK {
			break
		}
		if i == 10 {
			return fmt.Errorf("GitLab kept answering %d to the final update", code)
		}
		time.Sleep(time.Second)
	}
	logf("Job %s  duration_s=%.3f job=%d project=%d", map[bool]string{true: "succeeded", false: "failed"}[exit == 0], time.Since(start).Seconds(), job.ID, job.JobInfo.ProjectID)
	return nil
}

// cleanURL is a URL without its credentials, as gitlab-runner logs a
// repo_url (GitLab puts the job token in it).
func cleanURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable URL)"
	}
	u.User = nil
	return u.String()
}

// shortToken is the part of a token the runner prints, as gitlab-runner
// does: never the whole secret.
func shortToken(t string) string {
	t = strings.TrimPrefix(t, "glrt-")
	if len(t) > 8 {
		t = t[:8]
	}
	return t
}

func hostname() string {
	h, _ := os.Hostname()
	return h
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
}

// gitClient is the runner's client for a fetch, without its per-request
// timeout (a large pack may take longer): the job's deadline bounds it.
func gitClient(c *gitlabdouble.RunnerClient) *http.Client {
	hc := http.Client{}
	if c.HTTP != nil {
		hc = *c.HTTP
	}
	hc.Timeout = 0
	return &hc
}

// projectDir is where a job's sources go: <builds_dir>/<project_name>
// (GitLab sends the project's name, which holds no slash). A name that is
// empty, "." or "..", or holds a separator would put them elsewhere, and
// the fresh check-out removes whatever is there first: it is refused.
func projectDir(builds, name string) (string, error) {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\\\x00") {
		return "", fmt.Errorf("job_info.project_name %q is not a directory name", name)
	}
	return filepath.Join(builds, name), nil
}
