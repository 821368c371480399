//go:build nixcheck

package nixcheck

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// deployEnv is a scratch repository for deploy/deploy.sh (its registry a
// copy, nix/ the real one) and a PATH whose nix and ssh are stubs that log
// their arguments.
type deployEnv struct {
	repo, log string
	env       []string
}

func newDeployEnv(t *testing.T) *deployEnv {
	t.Helper()
	d := &deployEnv{repo: t.TempDir()}
	stubs := t.TempDir()
	d.log = filepath.Join(stubs, "calls.log")
	if err := os.MkdirAll(filepath.Join(d.repo, "hosts"), 0o755); err != nil {
		t.Fatal(err)
	}
	reg, err := os.ReadFile(filepath.Join(root, "hosts", "registry.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(d.repo, "hosts", "registry.json"), reg, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(root, "nix"), filepath.Join(d.repo, "nix")); err != nil {
		t.Fatal(err)
	}
	for name, extra := range map[string]string{
		"nix": "",
		// The host key deploy.sh asks for (a stand-in, not a key).
		"ssh": `case "$*" in *ssh_host_ed25519_key.pub*) echo "ssh-ed25519 AAAAstub root@stub";; esac`,
	} {
		script := "#!/bin/sh\necho \"" + name + " $*\" >> '" + d.log + "'\n" + extra + "\n"
		if err := os.WriteFile(filepath.Join(stubs, name), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	d.env = append(os.Environ(), "PATH="+stubs+":"+os.Getenv("PATH"), "FIREACTIONS_REPO="+d.repo, "NIX_CONFIG=build-users-group =")
	return d
}

// run runs deploy.sh and returns its exit code, stdout and stderr.
func (d *deployEnv) run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(filepath.Join(root, "deploy", "deploy.sh"), args...)
	cmd.Env = d.env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, out.String(), errb.String()
}

// calls are the stubs' logged invocations.
func (d *deployEnv) calls(t *testing.T) []string {
	data, err := os.ReadFile(d.log)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(data)), "\n")
}

func (d *deployEnv) registry(t *testing.T) map[string]any {
	var r map[string]any
	data, err := os.ReadFile(filepath.Join(d.repo, "hosts", "registry.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &r); err != nil {
		t.Fatal(err)
	}
	return r
}

var installArgs = []string{"install", "web-2", "--address", "198.51.100.7", "--provider", "hetzner",
	"--tags", "fireactions-small,prod", "--identity", "/keys/id_ed25519"}

// --dry-run prints the whole plan, every command once, and runs none of
// them: no stub is called, the registry is untouched.
func TestDeployDryRunPrintsPlan(t *testing.T) {
	d := newDeployEnv(t)
	before := d.registry(t)
	code, out, stderr := d.run(t, append(installArgs, "--dry-run")...)
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, stderr)
	}
	var plan []string
	for _, line := range strings.Split(out, "\n") {
		if cmd, ok := strings.CutPrefix(line, "+ "); ok {
			plan = append(plan, strings.ReplaceAll(cmd, d.repo, "REPO"))
		}
	}
	want := []string{
		`jq --arg h web-2 --argjson e \{\"address\":\"198.51.100.7\"\,\"provider\":\"hetzner\"\,\"system\":\"x86_64-linux\"\,\"tags\":\[\"fireactions-small\"\,\"prod\"\]\} .hosts\[\$h\]\ =\ \$e REPO/hosts/registry.json > REPO/hosts/registry.json.tmp`,
		`mv REPO/hosts/registry.json.tmp REPO/hosts/registry.json`,
		`nix-instantiate --eval --strict --json -E let\ e\ =\ \(import\ REPO/nix/lib\).hive.errors\ \(builtins.fromJSON\ \(builtins.readFile\ REPO/hosts/registry.json\)\)\;\ in\ if\ e\ ==\ \[\ \]\ then\ true\ else\ throw\ \(builtins.concatStringsSep\ \"\\n\"\ e\)`,
		`ssh -i /keys/id_ed25519 -o BatchMode=yes root@198.51.100.7 true`,
		`mkdir -p REPO/hosts/web-2`,
		`nix --extra-experimental-features nix-command\ flakes run github:nix-community/nixos-anywhere -- --flake REPO#web-2 --generate-hardware-config nixos-generate-config REPO/hosts/web-2/hardware.nix --target-host root@198.51.100.7 -i /keys/id_ed25519`,
		`ssh -i /keys/id_ed25519 root@198.51.100.7 cat /etc/ssh/ssh_host_ed25519_key.pub > REPO/hosts/web-2/ssh_host_ed25519_key.pub`,
		`nix --extra-experimental-features nix-command\ flakes run nixpkgs#ssh-to-age -- -i REPO/hosts/web-2/ssh_host_ed25519_key.pub`,
	}
	if strings.Join(plan, "\n") != strings.Join(want, "\n") {
		t.Errorf("plan:\n%s\nwant:\n%s", strings.Join(plan, "\n"), strings.Join(want, "\n"))
	}
	if c := d.calls(t); len(c) != 0 {
		t.Errorf("a dry run ran commands: %v", c)
	}
	if after := d.registry(t); len(after["hosts"].(map[string]any)) != len(before["hosts"].(map[string]any)) {
		t.Error("a dry run changed the registry")
	}
	if _, err := os.Stat(filepath.Join(d.repo, "hosts", "web-2")); !os.IsNotExist(err) {
		t.Error("a dry run created the host's directory")
	}

	code, out, _ = d.run(t, "apply", "@prod", "--dry-run")
	wantApply := "+ nix --extra-experimental-features nix-command\\ flakes run github:zhaofengli/colmena -- apply --impure --on @prod -f " + d.repo
	if code != 0 || strings.TrimSpace(out) != wantApply {
		t.Errorf("apply --dry-run: exit %d, printed\n%s\nwant\n%s", code, out, wantApply)
	}
}

// A real install (against the stubs) registers the host, checks the
// fleet with the real nix-instantiate, and runs nixos-anywhere.
func TestDeployInstallRegistersHost(t *testing.T) {
	d := newDeployEnv(t)
	code, _, stderr := d.run(t, installArgs...)
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, stderr)
	}
	host, ok := d.registry(t)["hosts"].(map[string]any)["web-2"].(map[string]any)
	if !ok {
		t.Fatal("web-2 is not in the registry")
	}
	if host["address"] != "198.51.100.7" || host["provider"] != "hetzner" || len(host["tags"].([]any)) != 2 {
		t.Errorf("registered %v", host)
	}
	calls := strings.Join(d.calls(t), "\n")
	for _, want := range []string{
		"ssh -i /keys/id_ed25519 -o BatchMode=yes root@198.51.100.7 true",
		"nix --extra-experimental-features nix-command flakes run github:nix-community/nixos-anywhere -- --flake " + d.repo + "#web-2",
		"nix --extra-experimental-features nix-command flakes run nixpkgs#ssh-to-age",
	} {
		if !strings.Contains(calls, want) {
			t.Errorf("no call %q in\n%s", want, calls)
		}
	}
	key, err := os.ReadFile(filepath.Join(d.repo, "hosts", "web-2", "ssh_host_ed25519_key.pub"))
	if err != nil || !strings.HasPrefix(string(key), "ssh-ed25519 ") {
		t.Errorf("host key not kept: %q, %v", key, err)
	}
}

// Mistakes stop the install before it touches the machine.
func TestDeployRefusesMistakes(t *testing.T) {
	cases := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"unknown provider", []string{"install", "h", "--address", "192.0.2.9", "--provider", "vultr", "--tags", "dev"}, "--provider must be one of"},
		{"bad host name", []string{"install", "H_1", "--address", "192.0.2.9", "--provider", "do", "--tags", "dev"}, "is not a host name"},
		{"no tags", []string{"install", "h", "--address", "192.0.2.9", "--provider", "do"}, "--tags is required"},
		{"unknown tag", []string{"install", "h", "--address", "192.0.2.9", "--provider", "do", "--tags", "fireactions-huge"}, "unknown tag fireactions-huge"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := newDeployEnv(t)
			code, _, stderr := d.run(t, tc.args...)
			if code == 0 || !strings.Contains(stderr, tc.wantErr) {
				t.Fatalf("exit %d, stderr:\n%s\nwant an error with %q", code, stderr, tc.wantErr)
			}
			for _, c := range d.calls(t) {
				if strings.HasPrefix(c, "ssh") || strings.Contains(c, "nixos-anywhere") {
					t.Errorf("reached the machine: %s", c)
				}
			}
		})
	}
}
