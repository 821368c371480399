package gitlab

import (
	"regexp"
	"slices"
	"testing"

	"github.com/nixos-fireactions/nixos-fireactions/forge"
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
