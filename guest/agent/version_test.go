package agent

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
	"github.com/nixos-fireactions/nixos-fireactions/internal/hosttest"
)

// versionCheck is a check against a runner printing version as
// gitlab-runner --version does.
func versionCheck(version string) *agentproto.VersionCheck {
	return &agentproto.VersionCheck{
		Command: []string{"sh", "-c", "printf 'Version:      " + version + "\\nGit revision: 0123abcd\\n'"},
		Pattern: `(?m)^Version:\s+v?(\d+(?:\.\d+)*)`, Min: "17.1", Why: "run-single --config/--runner",
	}
}

// TestOldRunnerFailsTheVMClearly: a runner older than the plan's minimum
// is not started; the host is told which version and what needs more.
// Positive control: 17.1.0 and 17.10.2 run.
func TestOldRunnerFailsTheVMClearly(t *testing.T) {
	for _, tc := range []struct {
		version string
		ok      bool
	}{{"16.11.1", false}, {"17.0.9", false}, {"17.1.0", true}, {"17.10.2", true}, {"garbage", false}} {
		t.Run(tc.version, func(t *testing.T) {
			host := newHostServer(t, "vm-token")
			cfg := testConfig(host.URL)
			cfg.Runner.MinVersion = versionCheck(tc.version)
			root := newTestRoot(t, cfg)
			con := &hosttest.SyncBuffer{}
			(&Agent{Root: root, Sys: newFakeSys(t, root), Console: con}).Boot(context.Background())
			ev := host.events()
			if tc.ok {
				if !slices.Contains(ev, agentproto.EventRunnerExited) || slices.Contains(ev, agentproto.EventFailed) {
					t.Fatalf("events %v\n%s", ev, con)
				}
				return
			}
			if !slices.Equal(ev, []agentproto.Event{agentproto.EventBooted, agentproto.EventNetworkUp, agentproto.EventFailed}) {
				t.Fatalf("events %v, want a failure before the runner starts\n%s", ev, con)
			}
			msg := host.got()[2].Message
			if !strings.Contains(msg, "17.1") || !strings.Contains(msg, "run-single --config/--runner") ||
				(tc.version != "garbage" && !strings.Contains(msg, tc.version)) {
				t.Fatalf("failure message %q does not say which version and what needs more", msg)
			}
		})
	}
}

func TestVersionBelow(t *testing.T) {
	for _, tc := range []struct {
		v, min string
		below  bool
	}{{"17.1", "17.1.0", false}, {"17.0.99", "17.1", true}, {"18.0", "17.1", false}, {"9.5", "17.1", true}, {"17.1.1", "17.1", false}} {
		if got, err := versionBelow(tc.v, tc.min); err != nil || got != tc.below {
			t.Errorf("versionBelow(%s, %s) = %v, %v", tc.v, tc.min, got, err)
		}
	}
}

// TestDockerConditionalFiles: a file for guests running dockerd is
// written only there, its counterpart only elsewhere.
func TestDockerConditionalFiles(t *testing.T) {
	yes, no := true, false
	for _, docker := range []bool{false, true} {
		root := t.TempDir()
		a := &Agent{Root: root, Sys: newFakeSys(t, root)}
		r := agentproto.Runner{UID: 1001, GID: 1002, Files: []agentproto.File{
			{Path: "/cfg/docker.toml", Content: []byte("docker"), IfDocker: &yes},
			{Path: "/cfg/shell.toml", Content: []byte("shell"), IfDocker: &no},
			{Path: "/cfg/always", Content: []byte("x")},
		}}
		if err := a.writeRunnerFiles(r, docker); err != nil {
			t.Fatal(err)
		}
		_, errD := os.Stat(filepath.Join(root, "cfg/docker.toml"))
		_, errS := os.Stat(filepath.Join(root, "cfg/shell.toml"))
		_, errA := os.Stat(filepath.Join(root, "cfg/always"))
		if (errD == nil) != docker || (errS == nil) == docker || errA != nil {
			t.Fatalf("docker=%v: docker file %v, shell file %v, unconditional %v", docker, errD, errS, errA)
		}
	}
	root := t.TempDir()
	a := &Agent{Root: root, Sys: newFakeSys(t, root)}
	if a.runsDocker(&agentproto.Registry{Docker: true}) {
		t.Fatal("runsDocker without dockerd in the image")
	}
	must(t, os.MkdirAll(filepath.Join(root, "usr/bin"), 0o755))
	must(t, os.WriteFile(filepath.Join(root, "usr/bin/dockerd"), []byte("#!/bin/sh\n"), 0o755))
	if !a.runsDocker(&agentproto.Registry{Docker: true}) || a.runsDocker(&agentproto.Registry{}) || a.runsDocker(nil) {
		t.Fatal("runsDocker: want true only with dockerd and the pool asking for it")
	}
}
