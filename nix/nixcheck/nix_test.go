//go:build nixcheck

package nixcheck

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/nixos-fireactions/nixos-fireactions/cli"
)

// root is the repository, from this package's directory.
var root = func() string {
	p, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		panic(err)
	}
	return p
}()

// nixCmd runs a Nix command quietly: no build users are needed to
// evaluate, and saying so keeps Debian's nix-bin from warning.
func nixCmd(t *testing.T, name string, args ...string) *exec.Cmd {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Fatalf("%s is not installed: `make deps` installs Debian's nix-bin (%v)", name, err)
	}
	cmd := exec.Command(name, args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "NIX_CONFIG=build-users-group =")
	return cmd
}

// eval evaluates a Nix expression (in the repository's directory) to
// JSON and decodes it into v.
func eval(t *testing.T, expr string, v any) {
	t.Helper()
	out, err := evalRaw(t, expr)
	if err != nil {
		t.Fatalf("nix-instantiate --eval %s:\n%v", expr, err)
	}
	if err := json.Unmarshal(out, v); err != nil {
		t.Fatalf("decode the evaluation of %s: %v\n%s", expr, err, out)
	}
}

// evalRaw evaluates expr to JSON, returning stderr in the error.
func evalRaw(t *testing.T, expr string) ([]byte, error) {
	t.Helper()
	cmd := nixCmd(t, "nix-instantiate", "--eval", "--strict", "--json", "-E", expr)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%v: %s", err, stderr.String())
	}
	return out, nil
}

// checks is nix/checks.nix with the example registry.
const checks = `(import ./nix/checks.nix { })`

// validate runs `fireactions validate --offline` on a configuration and
// returns its exit code and stderr.
func validate(t *testing.T, name string, config json.RawMessage) (int, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), strings.ReplaceAll(name, "/", "_")+".json")
	if err := os.WriteFile(path, config, 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	code := cli.Main([]string{"validate", "--offline", path}, &out, &errb)
	return code, errb.String()
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Every .nix file of the repository parses.
func TestParseEveryNixFile(t *testing.T) {
	var files []string
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "node_modules") {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(p, ".nix") {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 30 {
		t.Fatalf("found only %d .nix files under %s", len(files), root)
	}
	for _, f := range files {
		rel, _ := filepath.Rel(root, f)
		t.Run(rel, func(t *testing.T) {
			if out, err := nixCmd(t, "nix-instantiate", "--parse", f).CombinedOutput(); err != nil {
				t.Fatalf("%s does not parse:\n%s", rel, out)
			}
		})
	}
}

// The 9 presets have the sizes the profiles promise, and the binary
// accepts each whole configuration.
func TestPresetsAreValid(t *testing.T) {
	var presets map[string]json.RawMessage
	eval(t, checks+".presets", &presets)
	sizes := map[string]struct{ mem, vcpus, max int }{
		"small": {1024, 1, 2}, "medium": {2048, 2, 5}, "large": {4096, 4, 10},
	}
	forges := map[string]string{"fireactions": "github", "fireteact": "gitea", "fireglab": "gitlab"}
	var want []string
	for face := range forges {
		for size := range sizes {
			want = append(want, face+"-"+size)
		}
	}
	sort.Strings(want)
	if got := sortedKeys(presets); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("presets %v, want %v", got, want)
	}
	for _, name := range want {
		t.Run(name, func(t *testing.T) {
			face, size, _ := strings.Cut(name, "-")
			var c struct {
				Forges []struct{ Type string }
				Pools  []struct {
					Max    int
					Labels []string
					VM     struct {
						VCPUs     int `json:"vcpus"`
						MemoryMiB int `json:"memory_mib"`
					}
				}
			}
			if err := json.Unmarshal(presets[name], &c); err != nil {
				t.Fatal(err)
			}
			if len(c.Forges) != 1 || c.Forges[0].Type != forges[face] || len(c.Pools) != 1 {
				t.Fatalf("want one %s forge and one pool: %s", forges[face], presets[name])
			}
			p, s := c.Pools[0], sizes[size]
			if p.VM.MemoryMiB != s.mem || p.VM.VCPUs != s.vcpus || p.Max != s.max {
				t.Errorf("pool has %d MiB, %d vCPUs, max %d; want %d, %d, %d", p.VM.MemoryMiB, p.VM.VCPUs, p.Max, s.mem, s.vcpus, s.max)
			}
			if !contains(p.Labels, name) {
				t.Errorf("labels %v lack %q", p.Labels, name)
			}
			if code, stderr := validate(t, name, presets[name]); code != 0 {
				t.Fatalf("fireactions validate rejected the %s preset:\n%s\n%s", name, stderr, presets[name])
			}
		})
	}
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

// A deliberately wrong preset is rejected: by the binary when the size
// is impossible, by the evaluation when the size does not exist.
func TestBrokenPresetRejected(t *testing.T) {
	var broken json.RawMessage
	eval(t, checks+".broken", &broken)
	code, stderr := validate(t, "broken", broken)
	if code == 0 {
		t.Fatalf("fireactions validate accepted a preset with 0 vCPUs, 64 MiB and max 0:\n%s", broken)
	}
	for _, field := range []string{"vm.vcpus", "vm.memory_mib", `("default").max`} {
		if !strings.Contains(stderr, field) {
			t.Errorf("the rejection does not name %s:\n%s", field, stderr)
		}
	}

	_, err := evalRaw(t, `(import ./nix/lib).presets.mkPool { face = "fireactions"; name = "p"; forge = "gh"; forgeType = "github"; size = "huge"; kernel = "/k"; }`)
	if err == nil || !strings.Contains(err.Error(), `unknown pool size "huge"`) {
		t.Fatalf("an unknown size evaluated: %v", err)
	}
	_, err = evalRaw(t, `(import ./nix/lib).presets.mkPool { face = "fireactions"; name = "p"; forge = "x"; forgeType = "bitbucket"; kernel = "/k"; }`)
	if err == nil || !strings.Contains(err.Error(), `unknown forge type "bitbucket"`) {
		t.Fatalf("an unknown forge type evaluated: %v", err)
	}
}

// rendered is what checks.nix makes of a set of hosts or examples.
type rendered struct {
	Errors       []string                   `json:"errors"`
	OptionErrors []string                   `json:"optionErrors"`
	Configs      map[string]json.RawMessage `json:"configs"`
	Profiles     map[string][]string        `json:"profiles"`
	Secrets      map[string][]string        `json:"secrets"`
}

// checkConfigs validates every configuration and checks that each secret
// it names is a systemd credential of its face's unit.
func checkConfigs(t *testing.T, configs map[string]json.RawMessage) {
	for _, name := range sortedKeys(configs) {
		t.Run(name, func(t *testing.T) {
			if code, stderr := validate(t, name, configs[name]); code != 0 {
				t.Fatalf("fireactions validate rejected %s:\n%s\n%s", name, stderr, configs[name])
			}
			_, face, _ := strings.Cut(name, "/")
			var c struct {
				API    map[string]any
				Forges []map[string]any
			}
			if err := json.Unmarshal(configs[name], &c); err != nil {
				t.Fatal(err)
			}
			secrets := []map[string]any{c.API}
			secrets = append(secrets, c.Forges...)
			for _, m := range secrets {
				for k, v := range m {
					if k == "ca_file" || !strings.HasSuffix(k, "_file") {
						continue
					}
					if want := "/run/credentials/" + face + ".service/"; !strings.HasPrefix(v.(string), want) {
						t.Errorf("%s = %v is not under %s", k, v, want)
					}
				}
			}
		})
	}
}

// The example fleet (hosts/registry.json) has no errors; each host gets
// the profiles its tags imply, and each enabled face a configuration the
// binary accepts.
func TestExampleHosts(t *testing.T) {
	var h rendered
	eval(t, checks+".hosts", &h)
	if len(h.Errors)+len(h.OptionErrors) > 0 {
		t.Fatalf("hosts/registry.json:\n%s", strings.Join(append(h.Errors, h.OptionErrors...), "\n"))
	}
	wantConfigs := "gh-runner-1/fireactions gitea-ci-1/fireteact gl-runner-1/fireglab multi-1/fireactions multi-1/fireglab multi-1/fireteact"
	if got := strings.Join(sortedKeys(h.Configs), " "); got != wantConfigs {
		t.Fatalf("configurations %s, want %s", got, wantConfigs)
	}
	for host, want := range map[string]string{
		"gh-runner-1": "fireactions-large github-runners prod security-hardened",
		"gitea-ci-1":  "dev gitea-runners registry-cache",
	} {
		if got := strings.Join(h.Profiles[host], " "); got != want {
			t.Errorf("%s: profiles %s, want %s", host, got, want)
		}
	}
	if got := strings.Join(h.Secrets["gh-runner-1"], " "); got != "github-app-key github-webhook-secret" {
		t.Errorf("gh-runner-1: sops secrets %s", got)
	}
	checkConfigs(t, h.Configs)

	// What the tags mean reaches the configuration.
	var gh struct {
		Network struct {
			BlockPrivate bool `json:"block_private"`
		}
		DrainGrace string `json:"drain_grace"`
		Pools      []struct{ Max int }
	}
	if err := json.Unmarshal(h.Configs["gh-runner-1/fireactions"], &gh); err != nil {
		t.Fatal(err)
	}
	if !gh.Network.BlockPrivate || gh.DrainGrace != "30m" || gh.Pools[0].Max != 10 {
		t.Errorf("gh-runner-1 (large, prod, security-hardened): block_private %v, drain_grace %q, max %d",
			gh.Network.BlockPrivate, gh.DrainGrace, gh.Pools[0].Max)
	}
	var cache struct {
		Network struct {
			AllowTCPPorts []int `json:"allow_tcp_ports"`
		}
	}
	if err := json.Unmarshal(h.Configs["gitea-ci-1/fireteact"], &cache); err != nil {
		t.Fatal(err)
	}
	if len(cache.Network.AllowTCPPorts) != 2 || cache.Network.AllowTCPPorts[0] != 5000 || cache.Network.AllowTCPPorts[1] != 3128 {
		t.Errorf("gitea-ci-1 (registry-cache): guests may reach TCP %v on the host, want [5000 3128] (registry cache, proxy)", cache.Network.AllowTCPPorts)
	}
}

// A registry with mistakes is refused, each mistake named.
func TestBadRegistryRejected(t *testing.T) {
	registry := `{ fleet = { }; hosts = {
	  "Bad_Name" = { address = "192.0.2.1"; provider = "generic"; tags = [ ]; };
	  a = { address = "192.0.2.2"; provider = "vultr"; tags = [ "prod" "dev" "github-runner" ]; };
	  b = { provider = "do"; tags = [ "fireactions-small" "fireactions-large" ]; };
	}; }`
	var errs []string
	eval(t, `(import ./nix/lib).hive.errors `+registry, &errs)
	all := strings.Join(errs, "\n")
	for _, want := range []string{
		"host Bad_Name: not a host name",
		"host a: provider vultr is not one of",
		"host a: unknown tag github-runner",
		"host a: tags dev prod exclude each other",
		"host b: no address",
		"host b: tags fireactions-large fireactions-small give fireactions more than one size",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("errors lack %q:\n%s", want, all)
		}
	}

	// Option values are type-checked against the modules' options.
	var optErrs []string
	eval(t, `let l = import ./nix/lib; in l.spec.check (l.options.orchestrator "fireglab") "services.fireglab" { enable = "yes"; pools.default.size = "huge"; colour = 1; }`, &optErrs)
	all = strings.Join(optErrs, "\n")
	for _, want := range []string{
		`services.fireglab.enable: "yes" is not a boolean`,
		`services.fireglab.pools.default.size: "huge" is not a one of "large", "medium", "small"`,
		"services.fireglab.colour: no such option",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("option errors lack %q:\n%s", want, all)
		}
	}
}

// The three faces' default bridges can share a host; overlapping ones
// cannot.
func TestBridgeRegistry(t *testing.T) {
	var errs []string
	eval(t, `let l = import ./nix/lib; in l.microvm.bridgeErrors (builtins.mapAttrs (n: f: { cidr = f.cidr; owner = n; }) (builtins.listToAttrs (map (f: { name = f.bridge; value = f; }) (builtins.attrValues l.faces))))`, &errs)
	if len(errs) != 0 {
		t.Fatalf("the faces' default bridges conflict: %v", errs)
	}
	eval(t, `(import ./nix/lib).microvm.bridgeErrors { br0 = { cidr = "10.200.0.0/24"; owner = "fireactions"; }; br1 = { cidr = "10.200.0.128/25"; owner = "fireteact"; }; this-name-is-too-long = { cidr = "10.9.0.0/31"; owner = "x"; }; }`, &errs)
	all := strings.Join(errs, "\n")
	for _, want := range []string{"bridges br0 (fireactions, 10.200.0.0/24) and br1 (fireteact, 10.200.0.128/25) overlap", "not an interface name", "10.9.0.0/31 is not an IPv4 prefix"} {
		if !strings.Contains(all, want) {
			t.Errorf("errors lack %q:\n%s", want, all)
		}
	}
}

// The registry cache is read-only to guests, and the check that says so
// notices a policy that lets them push.
func TestZotDeniesPush(t *testing.T) {
	var z struct {
		Config      map[string]any `json:"config"`
		PushAllowed bool           `json:"pushAllowed"`
	}
	eval(t, checks+".zot", &z)
	if z.PushAllowed {
		t.Fatalf("the rendered Zot configuration lets clients push: %v", z.Config["http"])
	}
	var allowed bool
	eval(t, `let l = import ./nix/lib; c = (import ./nix/checks.nix { }).zot.config; in l.zot.pushAllowed (l.util.recursiveMerge c { http.accessControl.repositories."**".anonymousPolicy = [ "read" "create" ]; })`, &allowed)
	if !allowed {
		t.Fatal("pushAllowed missed an anonymous create policy")
	}
}

// The documentation's examples set only options that exist, with values
// of their types, and render configurations the binary accepts.
func TestDocExamples(t *testing.T) {
	var e rendered
	eval(t, checks+".examples", &e)
	if len(e.OptionErrors) > 0 {
		t.Fatalf("nix/examples:\n%s", strings.Join(e.OptionErrors, "\n"))
	}
	if len(e.Configs) < 4 {
		t.Fatalf("only %d example configurations", len(e.Configs))
	}
	checkConfigs(t, e.Configs)

	// A pool's installationId reaches its configuration.
	var gh struct {
		Pools []struct {
			Name           string
			InstallationID int64 `json:"installation_id"`
		}
	}
	if err := json.Unmarshal(e.Configs["github/fireactions"], &gh); err != nil {
		t.Fatal(err)
	}
	ids := map[string]int64{}
	for _, p := range gh.Pools {
		ids[p.Name] = p.InstallationID
	}
	if ids["labs"] != 7654321 || ids["default"] != 0 {
		t.Errorf("github example: installation_id by pool %v, want labs 7654321 and default none", ids)
	}
}
