package gitlab

import (
	"fmt"
	"path"
	"strconv"
	"strings"
	"time"

	gl "gitlab.com/gitlab-org/api/client-go/v2"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
	"github.com/nixos-fireactions/nixos-fireactions/forge"
)

// ReadyLine is what `gitlab-runner run-single` logs once it has its
// configuration and starts asking GitLab for a job.
const ReadyLine = "Starting runner for"

// BusyLine is how gitlab-runner logs that GitLab gave it a job.
const BusyLine = "Checking for jobs... received"

// MinRunnerVersion is the oldest gitlab-runner whose run-single takes
// --config and --runner (GitLab 17.1); the guest's agent checks it
// before it starts the runner (`gitlab-runner --version` prints
// "Version:      17.1.0").
const MinRunnerVersion = "17.1"

// versionPattern finds the version in `gitlab-runner --version`.
const versionPattern = `(?m)^Version:\s+v?(\d+(?:\.\d+)*)`

// guestPlan is how the guest runs gitlab-runner for exactly one job. The
// runner's token is only in config.toml (mode 600, the runner user's,
// removed once the runner has read it): not in the command line, and not
// in the environment, which the shell executor passes on to every job.
func (f *Forge) guestPlan(spec forge.RunnerSpec, run *gl.UserRunner, wait time.Duration) (agentproto.Runner, error) {
	g := spec.Guest
	if g.User == "" || g.AgentPath == "" {
		return agentproto.Runner{}, fmt.Errorf("gitlab: guest plan for %s: no runner user or path", spec.Name)
	}
	home := path.Join("/home", g.User)
	dir := path.Join(home, ".gitlab-runner")
	cfgPath := path.Join(dir, "config.toml")
	var files []agentproto.File
	caPath := ""
	if len(f.caPEM) > 0 {
		caPath = path.Join(dir, "ca.pem")
		files = append(files, agentproto.File{Path: caPath, Mode: 0o644, Content: f.caPEM})
	}
	cfg := runnerConfig{
		Name: spec.Name, URL: f.guestURL, ID: run.ID, Token: run.Token,
		Obtained: f.o.Now(), Expires: run.TokenExpiresAt, CAFile: caPath,
		Executor: f.o.Runner.Executor, Image: f.o.Runner.DefaultImage, Home: home, CheckInterval: g.FetchInterval,
	}
	// run-single reads config.toml once, before it prints ReadyLine; the
	// agent then removes it, so the job (same user) does not find it.
	// With the auto executor the guest's agent writes the docker one
	// where dockerd runs and the shell one elsewhere.
	if cfg.Executor == "auto" {
		docker, shell := cfg, cfg
		docker.Executor, shell.Executor = "docker", "shell"
		yes, no := true, false
		files = append(files,
			agentproto.File{Path: cfgPath, Mode: 0o600, Content: []byte(docker.toml()), RemoveWhenReady: true, IfDocker: &yes},
			agentproto.File{Path: cfgPath, Mode: 0o600, Content: []byte(shell.toml()), RemoveWhenReady: true, IfDocker: &no})
	} else {
		files = append(files, agentproto.File{Path: cfgPath, Mode: 0o600, Content: []byte(cfg.toml()), RemoveWhenReady: true})
	}
	cmd := []string{g.AgentPath, "run-single", "--config", cfgPath, "--runner", spec.Name, "--max-builds", "1"}
	if wait > 0 {
		cmd = append(cmd, "--wait-timeout", strconv.FormatInt(int64(wait/time.Second), 10))
	}
	return agentproto.Runner{
		Forge: "gitlab", User: g.User, UID: g.UID, GID: g.GID, Home: home, WorkDir: home,
		Command: cmd, ReadyLine: ReadyLine, BusyLine: BusyLine, JobPattern: jobPattern, Files: files,
		MinVersion: &agentproto.VersionCheck{
			Command: []string{g.AgentPath, "--version"}, Pattern: versionPattern,
			Min: MinRunnerVersion, Why: "run-single --config/--runner",
		},
	}, nil
}

// runnerConfig is the one runner of the guest's config.toml.
type runnerConfig struct {
	Name, URL, Token string
	ID               int64
	Obtained         time.Time
	Expires          *time.Time
	CAFile           string
	Executor         string
	Image            string // the docker executor's default image
	Home             string
	CheckInterval    time.Duration
}

// toml renders gitlab-runner's config.toml for the runner: the shell
// executor builds and caches under the runner's home; the docker executor
// keeps its defaults (the build container's /builds, a /cache volume).
func (c runnerConfig) toml() string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Written by fireactions for one job; the runner is deleted when the VM ends.\n")
	fmt.Fprintf(&b, "concurrent = 1\ncheck_interval = %d\n\n", max(int64(c.CheckInterval/time.Second), 1))
	fmt.Fprintf(&b, "[[runners]]\n")
	fmt.Fprintf(&b, "  name = %s\n  url = %s\n  id = %d\n  token = %s\n", tomlString(c.Name), tomlString(c.URL), c.ID, tomlString(c.Token))
	fmt.Fprintf(&b, "  token_obtained_at = %s\n", c.Obtained.UTC().Format(time.RFC3339))
	if c.Expires != nil && !c.Expires.IsZero() {
		fmt.Fprintf(&b, "  token_expires_at = %s\n", c.Expires.UTC().Format(time.RFC3339))
	}
	if c.CAFile != "" {
		fmt.Fprintf(&b, "  tls-ca-file = %s\n", tomlString(c.CAFile))
	}
	fmt.Fprintf(&b, "  executor = %s\n", tomlString(c.Executor))
	if c.Executor == "docker" {
		fmt.Fprintf(&b, "  [runners.docker]\n    image = %s\n    privileged = false\n    volumes = [\"/cache\"]\n", tomlString(c.Image))
		return b.String()
	}
	fmt.Fprintf(&b, "  builds_dir = %s\n  cache_dir = %s\n", tomlString(path.Join(c.Home, "builds")), tomlString(path.Join(c.Home, "cache")))
	return b.String()
}

// tomlString is s as a TOML basic string.
func tomlString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, "\\u%04X", r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}
