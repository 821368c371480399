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
		// nixos-anywhere --generate-hardware-config PATH: note whether git
		// knows PATH when the flake would be evaluated (a flake in a git
		// work tree sees only files git knows), then write it, as
		// nixos-anywhere does.
		"nix": `case "$*" in *--generate-hardware-config*)
  hw=$(echo "$*" | sed -n 's/.*nixos-generate-config \([^ ]*\).*/\1/p')
  echo "git knows: $(git -C "$FIREACTIONS_REPO" ls-files -- "$hw" 2>/dev/null)" >> '` + d.log + `'
  echo '{ boot.initrd.availableKernelModules = [ "virtio_pci" ]; }' > "$hw";;
esac`,
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
		// the new registry beside the old one, checked, then moved over it
		`cp -p REPO/hosts/registry.json REPO/hosts/.registry.json.XXXXXX`,
		`jq --arg h web-2 --argjson e \{\"address\":\"198.51.100.7\"\,\"provider\":\"hetzner\"\,\"system\":\"x86_64-linux\"\,\"tags\":\[\"fireactions-small\"\,\"prod\"\]\} .hosts\[\$h\]\ =\ \$e REPO/hosts/registry.json > REPO/hosts/.registry.json.XXXXXX`,
		`nix-instantiate --eval --strict --json --argstr lib REPO/nix/lib --argstr file REPO/hosts/.registry.json.XXXXXX -E \{\ lib\,\ file\ \}:\ \(import\ lib\).hive.errors\ \(builtins.fromJSON\ \(builtins.readFile\ file\)\)`,
		`mv REPO/hosts/.registry.json.XXXXXX REPO/hosts/registry.json`,
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
	path := filepath.Join(d.repo, "hosts", "registry.json")
	if err := os.Chmod(path, 0o640); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := d.run(t, installArgs...)
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, stderr)
	}
	// The new registry replaced the old one with the old one's mode.
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o640 {
		t.Errorf("hosts/registry.json: %v, %v; want mode 0640 kept", fi.Mode(), err)
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
		// Found by nix/lib/hive.nix's errors on the new registry, before
		// it replaces the old one; the message names the file, the host
		// and the tag.
		{"unknown tag", []string{"install", "h", "--address", "192.0.2.9", "--provider", "do", "--tags", "fireactions-huge"},
			"hosts/registry.json would be invalid, left unchanged:\n  host h: unknown tag fireactions-huge"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := newDeployEnv(t)
			path := filepath.Join(d.repo, "hosts", "registry.json")
			before, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			code, _, stderr := d.run(t, tc.args...)
			if code == 0 || !strings.Contains(stderr, tc.wantErr) {
				t.Fatalf("exit %d, stderr:\n%s\nwant an error with %q", code, stderr, tc.wantErr)
			}
			// A refused registration changes nothing: the registry is
			// byte-identical and no temporary file is left beside it.
			if after, err := os.ReadFile(path); err != nil || !bytes.Equal(after, before) {
				t.Errorf("hosts/registry.json changed (%v):\n%s", err, after)
			}
			if left, _ := filepath.Glob(filepath.Join(d.repo, "hosts", ".registry.json.*")); len(left) != 0 {
				t.Errorf("temporary files left: %v", left)
			}
			for _, c := range d.calls(t) {
				if strings.HasPrefix(c, "ssh") || strings.Contains(c, "nixos-anywhere") {
					t.Errorf("reached the machine: %s", c)
				}
			}
		})
	}
}

// In a git work tree (a flake sees only the files git knows), deploy.sh
// makes hosts/<host>/hardware.nix known to git before nixos-anywhere
// writes it, so the flake evaluation of the same install sees it; the
// content is nixos-anywhere's, and nothing else is staged.
func TestDeployTracksHardwareConfig(t *testing.T) {
	d := newDeployEnv(t)
	git := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("git", append([]string{"-C", d.repo, "-c", "user.name=t", "-c", "user.email=t@example.invalid"}, args...)...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	git("init", "-q")
	git("add", "hosts/registry.json")
	git("commit", "-q", "-m", "registry")

	code, out, stderr := d.run(t, installArgs...)
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, stderr)
	}
	calls := strings.Join(d.calls(t), "\n")
	if !strings.Contains(calls, "git knows: hosts/web-2/hardware.nix") {
		t.Errorf("git did not know hosts/web-2/hardware.nix when nixos-anywhere ran:\n%s", calls)
	}
	if got := git("ls-files", "--", "hosts/web-2/hardware.nix"); got != "hosts/web-2/hardware.nix" {
		t.Errorf("git ls-files after the install: %q", got)
	}
	if staged := git("diff", "--cached", "--name-only"); staged != "" {
		t.Errorf("staged: %q; want nothing (intent to add stages no content)", staged)
	}
	hw, err := os.ReadFile(filepath.Join(d.repo, "hosts", "web-2", "hardware.nix"))
	if err != nil || !strings.Contains(string(hw), "virtio_pci") {
		t.Errorf("hardware.nix is not nixos-anywhere's: %q, %v", hw, err)
	}
	if !strings.Contains(out, "git add --intent-to-add") {
		t.Errorf("deploy.sh did not say it told git:\n%s", out)
	}
}

// hostSecrets is hosts/secrets.nix with the plain-Nix layer's hive.
const hostSecrets = `(import ./hosts/secrets.nix { inherit ((import ./nix/lib)) hive; })`

// Each sops secret restarts the units of the enabled services that name
// it (sops-nix's restartUnits), and the module hosts/hive.nix gives a
// host passes nixpkgs' module system with sops-nix's option types.
func TestHostSecretsRestartUnits(t *testing.T) {
	var got struct {
		Multi     map[string][]string
		Synthetic map[string][]string
		Module    map[string][]string
		Missing   []string
	}
	eval(t, `let
	  s = `+hostSecrets+`;
	  l = import ./nix/lib;
	  lib = `+libExpr(t)+`;
	  plan = (l.hive.plans (builtins.fromJSON (builtins.readFile ./hosts/registry.json))).multi-1;
	  # The options the module sets, typed as sops-nix declares them
	  # (Mic92/sops-nix modules/sops/default.nix) and warnings as NixOS does.
	  decls = { lib, ... }: with lib; {
	    options.sops.defaultSopsFile = mkOption { type = types.path; };
	    options.sops.secrets = mkOption {
	      type = types.attrsOf (types.submodule { options.restartUnits = mkOption { type = types.listOf types.str; default = [ ]; }; });
	      default = { };
	    };
	    options.warnings = mkOption { type = types.listOf types.str; default = [ ]; };
	  };
	  evalModule = m: (lib.evalModules { modules = [ decls m ]; }).config;
	  withFile = evalModule (s.module { name = "multi-1"; inherit (plan) services; file = ./hosts/registry.json; });
	  without = evalModule (s.module { name = "multi-1"; inherit (plan) services; file = ./hosts/no-such.yaml; });
	in {
	  multi = s.restartUnits plan.services;
	  synthetic = s.restartUnits {
	    fireactions = { enable = true; forges.github.tokenFile = "/run/secrets/shared"; };
	    fireteact = { enable = true; forges.gitea.tokenFile = "/run/secrets/shared"; api.tokensFile = "/run/secrets/api"; };
	    fireglab = { enable = false; forges.gitlab.tokenFile = "/run/secrets/unused"; };
	    registry-cache = { enable = true; credentialsFile = "/run/secrets/upstream"; };
	    microvm-base.security.disableSMT = true;
	  };
	  module = builtins.mapAttrs (_: v: v.restartUnits) withFile.sops.secrets;
	  missing = without.warnings;
	}`, &got)
	wantMulti := map[string][]string{
		"github-app-key":        {"fireactions.service"},
		"github-webhook-secret": {"fireactions.service"},
		"gitea-token":           {"fireteact.service"},
		"gitlab-token":          {"fireglab.service"},
	}
	wantSynthetic := map[string][]string{
		"shared":   {"fireactions.service", "fireteact.service"},
		"api":      {"fireteact.service"},
		"unused":   {}, // only a disabled service names it: no unit to restart
		"upstream": {"registry-cache.service"},
	}
	for name, c := range map[string]struct{ got, want map[string][]string }{
		"multi-1": {got.Multi, wantMulti}, "synthetic": {got.Synthetic, wantSynthetic}, "module": {got.Module, wantMulti},
	} {
		gj, _ := json.Marshal(c.got)
		wj, _ := json.Marshal(c.want)
		if string(gj) != string(wj) {
			t.Errorf("%s: restartUnits %s, want %s", name, gj, wj)
		}
	}
	if len(got.Missing) != 1 || !strings.Contains(got.Missing[0], "secrets/multi-1.yaml does not exist") {
		t.Errorf("without secrets/multi-1.yaml: warnings %q", got.Missing)
	}
}
