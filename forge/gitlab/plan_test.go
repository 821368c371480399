package gitlab

import (
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
	"github.com/nixos-fireactions/nixos-fireactions/forge"
	"github.com/nixos-fireactions/nixos-fireactions/internal/double/gitlabdouble"
)

// TestGuestPlanChecksTheRunnerVersion: the guest is told to check that
// gitlab-runner is at least 17.1 (run-single --config/--runner), with a
// pattern that reads the version gitlab-runner --version prints.
func TestGuestPlanChecksTheRunnerVersion(t *testing.T) {
	e := newEnv(t, Scope{Kind: ScopeProject, Path: "acme/app"})
	plan, err := e.f.guestPlan(forge.RunnerSpec{Name: "fa-1", Guest: guestOpts}, userRunner(5, "glrt-t"), 0)
	if err != nil {
		t.Fatal(err)
	}
	vc := plan.MinVersion
	if vc == nil || vc.Min != "17.1" || !slices.Equal(vc.Command, []string{guestOpts.AgentPath, "--version"}) {
		t.Fatalf("version check %+v", vc)
	}
	out := "Version:      17.1.0\nGit revision: fe451d5a\nGit branch:   17-1-stable\nGO version:   go1.22.5\n"
	if m := regexp.MustCompile(vc.Pattern).FindStringSubmatch(out); m == nil || m[1] != "17.1.0" {
		t.Fatalf("pattern %q reads %q from gitlab-runner --version", vc.Pattern, m)
	}
}

// TestAutoExecutorFollowsTheImage: with the auto executor the guest gets
// a docker config.toml (with the default image, for jobs that name none)
// to use where dockerd runs, and a shell one for elsewhere; an explicit
// executor gets its one config.
func TestAutoExecutorFollowsTheImage(t *testing.T) {
	plan := func(executor string) []agentproto.File {
		e := newEnv(t, Scope{Kind: ScopeProject, Path: "acme/app"}, func(o *Options) {
			o.Runner.Executor, o.Runner.DefaultImage = executor, ""
		})
		p, err := e.f.guestPlan(forge.RunnerSpec{Name: "fa-1", Guest: guestOpts}, userRunner(5, "glrt-t"), 0)
		if err != nil {
			t.Fatal(err)
		}
		var cfgs []agentproto.File
		for _, f := range p.Files {
			if strings.HasSuffix(f.Path, "/config.toml") {
				cfgs = append(cfgs, f)
			}
		}
		return cfgs
	}
	auto := plan("") // the default
	if len(auto) != 2 || auto[0].IfDocker == nil || auto[1].IfDocker == nil || *auto[0].IfDocker == *auto[1].IfDocker {
		t.Fatalf("auto: %d config.toml files, want one for guests with dockerd and one without", len(auto))
	}
	for _, f := range auto {
		c := string(f.Content)
		if *f.IfDocker {
			if !strings.Contains(c, `executor = "docker"`) || !strings.Contains(c, `image = "alpine:latest"`) {
				t.Errorf("docker config:\n%s", c)
			}
		} else if !strings.Contains(c, `executor = "shell"`) || strings.Contains(c, "image =") {
			t.Errorf("shell config:\n%s", c)
		}
		rc, err := gitlabdouble.DecodeRunnerConfig(f.Content, "fa-1")
		if err != nil || (*f.IfDocker && (rc.Docker == nil || rc.Docker.Image != "alpine:latest")) {
			t.Errorf("config.toml does not decode as gitlab-runner's: %+v, %v", rc, err)
		}
		if !f.RemoveWhenReady || f.Mode != 0o600 {
			t.Errorf("config.toml %+v: want mode 600, removed once the runner is ready", f)
		}
	}
	for _, ex := range []string{"shell", "docker"} {
		one := plan(ex)
		if len(one) != 1 || one[0].IfDocker != nil || !strings.Contains(string(one[0].Content), `executor = "`+ex+`"`) {
			t.Errorf("executor %s: %d config files", ex, len(one))
		}
	}
}
