//go:build nixcheck

package nixcheck

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
)

// evalChecks is nix/eval/checks.nix: our modules through nixpkgs' own
// lib.evalModules (nix/eval/lib.nix says where the lib comes from).
const evalChecks = `(import ./nix/eval/checks.nix { })`

// unit is a face's systemd unit as nix/eval reports it.
type unit struct {
	ServiceConfig     map[string]any  `json:"serviceConfig"`
	Path              []string        `json:"path"`
	EnableDefaultPath bool            `json:"enableDefaultPath"`
	Settings          json.RawMessage `json:"settings"`
}

// report is one evaluated configuration (nix/eval/checks.nix report).
type report struct {
	Checked    bool
	Assertions []string
	Warnings   []string
	Units      map[string]unit
	Firewall   map[string]struct {
		AllowedTCPPorts []int
		AllowedUDPPorts []int
	}
	KernelModules []string
	Tmpfiles      []string
}

func strs(v any) []string {
	l, _ := v.([]any)
	out := make([]string, 0, len(l))
	for _, x := range l {
		s, _ := x.(string)
		out = append(out, s)
	}
	return out
}

// checkUnit asserts what every face's unit must be, whatever the host.
func checkUnit(t *testing.T, name, face string, u unit) {
	t.Helper()
	sc := u.ServiceConfig
	if s, _ := sc["ExecStart"].(string); !strings.Contains(s, "/bin/"+face+" serve /nix/store/") {
		t.Errorf("%s: ExecStart %q", name, s)
	}
	if sc["KillMode"] != "process" {
		t.Errorf("%s: KillMode %v: a crash would take every VM with it (want process)", name, sc["KillMode"])
	}
	if s, _ := sc["ExecReload"].(string); !strings.HasSuffix(s, "/bin/kill -HUP $MAINPID") {
		t.Errorf("%s: ExecReload %q: want SIGHUP to the binary", name, s)
	}
	// Its READY=1 follows the pull and flattening of the pools' images:
	// systemd's 90 s would kill a start that pulls gigabytes, again and
	// again.
	if sc["TimeoutStartSec"] != "30min" {
		t.Errorf("%s: TimeoutStartSec %v: want 30min, for the images pulled before READY=1", name, sc["TimeoutStartSec"])
	}
	if sc["Type"] != "notify" || sc["User"] != "root" || sc["NoNewPrivileges"] != true {
		t.Errorf("%s: Type %v User %v NoNewPrivileges %v", name, sc["Type"], sc["User"], sc["NoNewPrivileges"])
	}
	caps := strs(sc["CapabilityBoundingSet"])
	if !slices.Contains(caps, "CAP_NET_ADMIN") {
		t.Errorf("%s: capabilities %v lack CAP_NET_ADMIN", name, caps)
	}
	for _, c := range strs(sc["LoadCredential"]) {
		if n, src, ok := strings.Cut(c, ":"); !ok || n == "" || !strings.HasPrefix(src, "/") || strings.HasPrefix(src, "/nix/store") {
			t.Errorf("%s: credential %q: want NAME:/host/file outside the store", name, c)
		}
	}
	if u.EnableDefaultPath {
		t.Errorf("%s: NixOS's default PATH is on: the unit's tools are more than its path", name)
	}
	for _, tool := range []string{"nftables", "iproute2", "erofs-utils", "e2fsprogs"} {
		if !slices.ContainsFunc(u.Path, func(p string) bool { return strings.HasSuffix(p, "-"+tool) }) {
			t.Errorf("%s: PATH %v lacks %s", name, u.Path, tool)
		}
	}
	if code, stderr := validate(t, name, u.Settings); code != 0 {
		t.Errorf("%s: the binary rejects the unit's configuration:\n%s\n%s", name, stderr, u.Settings)
	}
}

// Each of nixosModules evaluates alone and together with default: each
// imports what it needs, and none is declared twice.
func TestModulesEvaluateAloneAndWithDefault(t *testing.T) {
	var mods map[string]struct{ Alone, WithDefault bool }
	eval(t, evalChecks+".modules", &mods)
	want := []string{"default", "fireactions", "fireglab", "fireteact", "microvm-base", "registry-cache"}
	if got := sortedKeys(mods); !slices.Equal(got, want) {
		t.Fatalf("modules %v, want %v", got, want)
	}
}

// The documentation's four scenarios are whole hosts under nixpkgs'
// module system: every definition type-checked, no assertion fails, each
// face's unit is what a host needs and its configuration file is one the
// binary accepts; guests get DNS on TCP and UDP.
func TestScenariosEvaluate(t *testing.T) {
	var scenarios map[string]report
	eval(t, evalChecks+".scenarios", &scenarios)
	if got := sortedKeys(scenarios); !slices.Equal(got, []string{"gitea-cache", "github", "gitlab", "multi"}) {
		t.Fatalf("scenarios %v", got)
	}
	for name, r := range scenarios {
		if !r.Checked || len(r.Assertions) > 0 {
			t.Errorf("%s: checked %v, failed assertions %q", name, r.Checked, r.Assertions)
		}
		if len(r.Units) == 0 {
			t.Errorf("%s: no orchestrator unit", name)
		}
		for face, u := range r.Units {
			checkUnit(t, name+"/"+face, face, u)
			if caps := strs(u.ServiceConfig["CapabilityBoundingSet"]); !slices.Equal(caps, []string{"CAP_NET_ADMIN"}) {
				t.Errorf("%s/%s: capabilities %v; a host without image pools or Firecracker needs CAP_NET_ADMIN only", name, face, caps)
			}
		}
		for bridge, fw := range r.Firewall {
			if !slices.Contains(fw.AllowedTCPPorts, 53) || !slices.Contains(fw.AllowedUDPPorts, 53) {
				t.Errorf("%s: bridge %s opens DNS on TCP %v / UDP %v: want 53 on both", name, bridge, fw.AllowedTCPPorts, fw.AllowedUDPPorts)
			}
		}
		for _, m := range r.KernelModules {
			if strings.HasPrefix(m, "kvm-") {
				t.Errorf("%s: loads %s without kvm.cpuVendor", name, m)
			}
		}
	}
}

// The 17 profiles evaluate as hosts (with the forge data a host gives).
func TestProfilesEvaluate(t *testing.T) {
	var profiles map[string]report
	eval(t, evalChecks+".profiles", &profiles)
	if len(profiles) != 17 {
		t.Fatalf("%d profiles: %v", len(profiles), sortedKeys(profiles))
	}
	for name, r := range profiles {
		if !r.Checked {
			t.Errorf("%s: not checked", name)
		}
		// registry-cache alone has no VM bridge to serve, and says so.
		if name == "registry-cache" {
			if len(r.Assertions) != 1 || !strings.Contains(r.Assertions[0], "services.registry-cache.proxy: no VM bridge") {
				t.Errorf("%s: assertions %q", name, r.Assertions)
			}
			continue
		}
		if len(r.Assertions) > 0 {
			t.Errorf("%s: failed assertions %q", name, r.Assertions)
		}
		for face, u := range r.Units {
			checkUnit(t, name+"/"+face, face, u)
		}
	}
}

// The flake's outputs exist, and every fleet host of hosts/registry.json
// evaluates as flake.nixosConfigurations.<host> (nixosSystem being this
// evaluator, disko's and sops-nix's options declared with their types).
func TestFlakeAndFleetHosts(t *testing.T) {
	var f struct {
		Outputs, Modules, Packages, Colmena, Checks, Profiles []string
		Hosts                                                 map[string]report
	}
	eval(t, evalChecks+".flake", &f)
	want := map[string][]string{
		"outputs": {"checks", "colmena", "colmenaHive", "devShells", "lib", "nixosConfigurations", "nixosModules", "packages", "profiles"},
		"modules": {"default", "fireactions", "fireglab", "fireteact", "microvm-base", "registry-cache"},
		"colmena": {"gh-runner-1", "gitea-ci-1", "gl-runner-1", "meta", "multi-1"},
		"checks":  {"host-gh-runner-1", "host-gitea-ci-1", "host-gl-runner-1", "host-multi-1", "presets"},
	}
	got := map[string][]string{"outputs": f.Outputs, "modules": f.Modules, "colmena": f.Colmena, "checks": f.Checks}
	for k, w := range want {
		for _, name := range w {
			if !slices.Contains(got[k], name) {
				t.Errorf("flake %s lack %s (have %v)", k, name, got[k])
			}
		}
	}
	if len(f.Profiles) != 17 {
		t.Errorf("profiles: %v", f.Profiles)
	}
	faces := map[string][]string{"gh-runner-1": {"fireactions"}, "gitea-ci-1": {"fireteact"}, "gl-runner-1": {"fireglab"}, "multi-1": {"fireactions", "fireglab", "fireteact"}}
	if got := sortedKeys(f.Hosts); !slices.Equal(got, sortedKeys(faces)) {
		t.Fatalf("hosts %v", got)
	}
	for host, r := range f.Hosts {
		if !r.Checked || len(r.Assertions) > 0 {
			t.Errorf("%s: checked %v, failed assertions %q", host, r.Checked, r.Assertions)
		}
		if got := sortedKeys(r.Units); !slices.Equal(got, faces[host]) {
			t.Errorf("%s: units %v, want %v", host, got, faces[host])
		}
		for face, u := range r.Units {
			checkUnit(t, host+"/"+face, face, u)
		}
	}
}

// The unit's sandbox follows the work: CAP_NET_ADMIN alone for initramfs
// pools on QEMU; image pools add what flattening needs and keep set-id
// bits; Firecracker adds the jailer's capabilities, a delegated cgroup,
// its binaries, and boots the vmlinux.
func TestSandboxFollowsTheWork(t *testing.T) {
	var s map[string]report
	eval(t, evalChecks+".sandboxes", &s)
	imageCaps := []string{"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_MKNOD", "CAP_SETFCAP"}
	jailerCaps := []string{"CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SYS_ADMIN", "CAP_SYS_CHROOT", "CAP_SYS_RESOURCE"}
	for name, r := range s {
		if len(r.Assertions) > 0 {
			t.Errorf("%s: failed assertions %q", name, r.Assertions)
		}
		u := r.Units["fireteact"]
		checkUnit(t, name, "fireteact", u)
		caps := strs(u.ServiceConfig["CapabilityBoundingSet"])
		var cfg struct {
			VMM struct {
				Driver      string
				Firecracker struct {
					Binary       string
					JailerBinary string `json:"jailer_binary"`
					UID          int
				}
			}
			Pools []struct {
				VM     map[string]any
				Runner struct{ Path string }
			}
			Forges []struct{ Flavor *string }
		}
		if err := json.Unmarshal(u.Settings, &cfg); err != nil {
			t.Fatal(err)
		}
		hasAll := func(want []string) bool {
			for _, c := range want {
				if !slices.Contains(caps, c) {
					return false
				}
			}
			return true
		}
		switch name {
		case "forgejo":
			if f := cfg.Forges[0].Flavor; f == nil || *f != "forgejo" {
				t.Errorf("%s: forge flavor %v, want forgejo", name, f)
			}
			if r := cfg.Pools[0].VM["root_initramfs"]; !strings.HasSuffix(r.(string), "-guest-root.nix/root.cpio.gz") {
				t.Errorf("%s: root_initramfs %v: want the forge's guest root derivation", name, r)
			}
			if p := cfg.Pools[0].Runner.Path; p != "/bin/forgejo-runner" {
				t.Errorf("%s: runner.path %q: want where the Forgejo guest root puts forgejo-runner", name, p)
			}
		case "initramfs":
			if f := cfg.Forges[0].Flavor; f != nil {
				t.Errorf("%s: forge flavor %q set; want it left to the orchestrator's default", name, *f)
			}
			if !slices.Equal(caps, []string{"CAP_NET_ADMIN"}) || u.ServiceConfig["RestrictSUIDSGID"] != true {
				t.Errorf("%s: capabilities %v, RestrictSUIDSGID %v", name, caps, u.ServiceConfig["RestrictSUIDSGID"])
			}
			if r := cfg.Pools[0].VM["root_initramfs"]; !strings.HasSuffix(r.(string), "-guest-root.nix/root.cpio.gz") {
				t.Errorf("%s: root_initramfs %v: want the forge's guest root derivation", name, r)
			}
			if p := cfg.Pools[0].Runner.Path; p != "/bin/act_runner" {
				t.Errorf("%s: runner.path %q: want where the guest root puts act_runner", name, p)
			}
		case "image":
			if !hasAll(imageCaps) || hasAll(jailerCaps[:1]) || u.ServiceConfig["RestrictSUIDSGID"] != false {
				t.Errorf("%s: capabilities %v, RestrictSUIDSGID %v", name, caps, u.ServiceConfig["RestrictSUIDSGID"])
			}
			if _, ok := cfg.Pools[0].VM["root_initramfs"]; ok {
				t.Errorf("%s: an image pool also has a root_initramfs: %v", name, cfg.Pools[0].VM)
			}
		case "firecracker":
			if !hasAll(imageCaps) || !hasAll(jailerCaps) || u.ServiceConfig["Delegate"] != true || u.ServiceConfig["ProtectControlGroups"] != false {
				t.Errorf("%s: capabilities %v, Delegate %v", name, caps, u.ServiceConfig["Delegate"])
			}
			if cfg.VMM.Driver != "firecracker" || !strings.HasSuffix(cfg.VMM.Firecracker.JailerBinary, "-firecracker/bin/jailer") || !strings.HasSuffix(cfg.VMM.Firecracker.Binary, "-firecracker/bin/firecracker") || cfg.VMM.Firecracker.UID == 0 {
				t.Errorf("%s: vmm %+v", name, cfg.VMM)
			}
			if k, _ := cfg.Pools[0].VM["kernel"].(string); !strings.HasSuffix(k, "/vmlinux") {
				t.Errorf("%s: kernel %q: Firecracker boots a vmlinux", name, k)
			}
			if !slices.ContainsFunc(u.Path, func(p string) bool { return strings.HasSuffix(p, "-firecracker") }) {
				t.Errorf("%s: PATH %v lacks firecracker", name, u.Path)
			}
		default:
			t.Errorf("unexpected %s", name)
		}
	}
	if len(s) != 4 {
		t.Errorf("%d sandboxes", len(s))
	}
}

// nixpkgs' module system refuses, naming the option: a value of the
// wrong type, an option that does not exist, a secret given as a Nix
// path (it would be copied into the world-readable store), a NixOS
// option of ours set to a type NixOS refuses; one KVM module per vendor.
func TestModuleSystemRejects(t *testing.T) {
	host := func(extra string) string {
		return `let e = import ./nix/eval { }; c = (e.nixos [ e.modules.default {
		  services.fireteact = { enable = true; forges.gitea = { url = "https://g.example.invalid"; tokenFile = "/run/secrets/t"; }; pools.default = { }; };
		} ` + extra + ` ]).config; in builtins.deepSeq (e.unit c "fireteact") (builtins.deepSeq c.boot.kernelModules c.boot.kernelModules)`
	}
	var ok []string
	eval(t, host(`{ services.microvm-base.kvm.cpuVendor = "amd"; }`), &ok)
	if !slices.Contains(ok, "kvm-amd") || slices.Contains(ok, "kvm-intel") {
		t.Errorf("cpuVendor amd loads %v", ok)
	}
	for _, c := range []struct{ name, module, want string }{
		{"wrong type", `{ services.fireteact.network.agentPort = "8089"; }`, "services.fireteact.network.agentPort' is not of type `16 bit unsigned integer"},
		{"unknown option", `{ services.fireteact.pools.default.sise = "large"; }`, "services.fireteact.pools.default.sise' does not exist"},
		{"store-path secret", `{ services.fireteact.forges.gitea.tokenFile = ./README.md; }`, "services.fireteact.forges.gitea.tokenFile' is not of type"},
		{"bad enum", `{ services.fireteact.vmm.driver = "kvmtool"; }`, "services.fireteact.vmm.driver' is not of type `one of \"qemu\", \"firecracker\"'"},
		{"NixOS type", `{ networking.hostName = "not a host"; }`, "networking.hostName' is not of type"},
		{"bad kvm vendor", `{ services.microvm-base.kvm.cpuVendor = "via"; }`, "services.microvm-base.kvm.cpuVendor' is not of type"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := evalRaw(t, host(c.module))
			if err == nil {
				t.Fatalf("accepted: %s", c.module)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error does not say %q:\n%v", c.want, err)
			}
		})
	}
}

// The registry cache refuses a Squid that nixpkgs marks insecure (as
// nixos-25.05's squid 6 is), naming the option, and takes one that is not.
func TestRegistryCacheRefusesAnInsecureSquid(t *testing.T) {
	expr := func(vulns string) string {
		return `let e = import ./nix/eval { }; c = (e.nixos [ e.modules.default {
		  services.fireteact = { enable = true; forges.gitea = { url = "https://g.example.invalid"; tokenFile = "/run/secrets/t"; }; pools.default = { }; };
		  services.registry-cache = { enable = true; proxy.package = e.pkgs.squid // { meta.knownVulnerabilities = [ ` + vulns + ` ]; }; };
		} ]).config; in e.failedAssertions c`
	}
	var failed []string
	eval(t, expr(`"many unresolved CVEs"`), &failed)
	if len(failed) != 1 || !strings.Contains(failed[0], "services.registry-cache.proxy.package: squid is marked insecure") {
		t.Errorf("an insecure squid: failed assertions %q", failed)
	}
	eval(t, expr(""), &failed)
	if len(failed) != 0 {
		t.Errorf("a squid without known vulnerabilities: failed assertions %q", failed)
	}
}

// A secret file in the Nix store (what `toString ./token` gives in a
// flake) is refused, naming the option: the store is every user's to
// read, and the credential's 0400 copy hides that from the daemon. A
// file outside it (the control) is taken.
func TestSecretsInTheStoreAreRefused(t *testing.T) {
	expr := func(tokenFile string) string {
		return `let e = import ./nix/eval { }; c = (e.nixos [ e.modules.default {
		  services.fireteact = { enable = true; forges.gitea = { url = "https://g.example.invalid"; tokenFile = "` + tokenFile + `"; }; pools.default = { }; };
		} ]).config; in e.failedAssertions c`
	}
	var failed []string
	eval(t, expr("/nix/store/00000000000000000000000000000000-source/token"), &failed)
	if len(failed) != 1 || !strings.Contains(failed[0], "services.fireteact.forges.gitea.tokenFile: /nix/store/00000000000000000000000000000000-source/token is in the Nix store") {
		t.Errorf("a token in the store: failed assertions %q", failed)
	}
	eval(t, expr("/run/secrets/gitea-token"), &failed)
	if len(failed) != 0 {
		t.Errorf("a token outside the store: failed assertions %q", failed)
	}
	// A certificate is public: one in the store is taken; its key is not.
	tls := func(cert, key string) string {
		return `let e = import ./nix/eval { }; c = (e.nixos [ e.modules.default {
		  services.fireteact = { enable = true; forges.gitea = { url = "https://g.example.invalid"; tokenFile = "/run/secrets/t"; }; pools.default = { };
		    api = { listen = "0.0.0.0:8443"; tokensFile = "/run/secrets/api-tokens"; tlsCertFile = "` + cert + `"; tlsKeyFile = "` + key + `"; }; };
		} ]).config; in e.failedAssertions c`
	}
	store := "/nix/store/00000000000000000000000000000000-source/"
	eval(t, tls(store+"api.crt", "/run/secrets/api.key"), &failed)
	if len(failed) != 0 {
		t.Errorf("a certificate in the store: failed assertions %q", failed)
	}
	eval(t, tls(store+"api.crt", store+"api.key"), &failed)
	if len(failed) != 1 || !strings.Contains(failed[0], "services.fireteact.api.tlsKeyFile: "+store+"api.key is in the Nix store") {
		t.Errorf("a key in the store: failed assertions %q", failed)
	}
}

// A face's own network.block_private does not bind the guests' web
// proxy, which connects from the host: the module refuses it with the
// proxy on, naming the host-wide option both honour; with that option
// (the control) it is taken.
func TestBlockPrivateOfOneFaceNeedsTheHostWideOptionWithTheProxy(t *testing.T) {
	expr := func(hostWide bool) string {
		return fmt.Sprintf(`let e = import ./nix/eval { }; c = (e.nixos [ e.modules.default {
		  services.fireteact = { enable = true; forges.gitea = { url = "https://g.example.invalid"; tokenFile = "/run/secrets/t"; }; pools.default = { };
		    settings.network.block_private = true; };
		  services.registry-cache = { enable = true; proxy.package = e.pkgs.squid // { meta.knownVulnerabilities = [ ]; }; };
		  services.microvm-base.security.blockPrivateNetworks = %t;
		} ]).config; in e.failedAssertions c`, hostWide)
	}
	var failed []string
	eval(t, expr(false), &failed)
	if len(failed) != 1 || !strings.Contains(failed[0], "services.fireteact.settings.network.block_private: the guests' web proxy") {
		t.Errorf("block_private on one face with the proxy: failed assertions %q", failed)
	}
	eval(t, expr(true), &failed)
	if len(failed) != 0 {
		t.Errorf("with security.blockPrivateNetworks: failed assertions %q", failed)
	}
}

// Options that would build a host that does not do what they say are
// refused, naming the option: kvm.nested without a CPU vendor (nested=1
// belongs to kvm-intel or kvm-amd, so it would silently do nothing),
// and a Zot stateDir outside /var/lib (Zot, a dynamic user, could not
// write it). The controls, with a vendor and under /var/lib, are taken.
func TestOptionsThatWouldDoNothingAreRefused(t *testing.T) {
	expr := func(host string) string {
		return `let e = import ./nix/eval { }; c = (e.nixos [ e.modules.default {
		  services.fireteact = { enable = true; forges.gitea = { url = "https://g.example.invalid"; tokenFile = "/run/secrets/t"; }; pools.default = { }; };
		} ` + host + ` ]).config; in e.failedAssertions c`
	}
	for _, tc := range []struct{ host, want string }{
		{`{ services.microvm-base.kvm.nested = true; }`, "services.microvm-base.kvm.nested: nested=1 is an option of kvm-intel or kvm-amd"},
		{`{ services.microvm-base.kvm = { nested = true; enable = false; }; }`, "services.microvm-base.kvm.nested: nested=1 is an option of kvm-intel or kvm-amd"},
		{`{ services.microvm-base.kvm = { nested = true; cpuVendor = "amd"; }; }`, ""},
		{`{ services.registry-cache = { enable = true; stateDir = "/srv/zot"; }; }`, "services.registry-cache.stateDir: /srv/zot is not a directory under /var/lib/"},
		{`{ services.registry-cache = { enable = true; stateDir = "/var/lib/"; }; }`, "services.registry-cache.stateDir: /var/lib/ is not a directory under /var/lib/"},
		{`{ services.registry-cache = { enable = true; stateDir = "/var/lib/../srv"; }; }`, "services.registry-cache.stateDir: /var/lib/../srv is not a directory under /var/lib/"},
		{`{ services.registry-cache = { enable = true; stateDir = "/var/lib/./zot"; }; }`, "services.registry-cache.stateDir: /var/lib/./zot is not a directory under /var/lib/"},
		{`{ services.registry-cache = { enable = true; stateDir = "/var/lib//zot"; }; }`, "services.registry-cache.stateDir: /var/lib//zot is not a directory under /var/lib/"},
		{`{ services.registry-cache = { enable = true; stateDir = "/var/lib/zot-disk/cache/"; }; }`, ""},
	} {
		var failed []string
		eval(t, expr(tc.host), &failed)
		if tc.want == "" && len(failed) != 0 || tc.want != "" && (len(failed) != 1 || !strings.Contains(failed[0], tc.want)) {
			t.Errorf("%s: failed assertions %q; want %q", tc.host, failed, tc.want)
		}
	}
}
