//go:build nixcheck

package nixcheck

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
)

// module is a module evaluated with nix/stubs.nix: its option names and
// its config with mkIf and mkMerge resolved.
type module struct {
	Options map[string]any `json:"options"`
	Config  struct {
		Assertions []struct {
			Assertion bool
			Message   string
		}
		Services map[string]json.RawMessage
		Systemd  struct {
			Services map[string]struct {
				ServiceConfig map[string]any `json:"serviceConfig"`
				Path          []any
			}
		}
		Networking struct {
			Firewall struct {
				Interfaces map[string]struct {
					AllowedTCPPorts []int
					AllowedUDPPorts []int
				}
			}
		}
		Boot struct {
			KernelModules []string
			Kernel        struct{ Sysctl map[string]int }
		}
	} `json:"config"`
}

// The modules' bodies, evaluated on the "all three forges" example with
// stand-ins for nixpkgs: each orchestrator's unit, credentials and
// hardening, microvm-base's firewall, DNS and sysctls, the cache's unit.
// (The module system itself, merging and types, needs nixpkgs.)
func TestModulesWiring(t *testing.T) {
	var mods map[string]json.RawMessage
	eval(t, checks+".modules", &mods)
	get := func(name string) module {
		var m module
		if err := json.Unmarshal(mods[name], &m); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for _, a := range m.Config.Assertions {
			if !a.Assertion {
				t.Errorf("%s: assertion fails: %s", name, a.Message)
			}
		}
		return m
	}
	secrets := map[string]string{
		"fireactions": "forge-github-token:/run/secrets/github-token",
		"fireteact":   "forge-gitea-token:/run/secrets/gitea-token",
		"fireglab":    "forge-gitlab-token:/run/secrets/gitlab-token",
	}
	for _, face := range []string{"fireactions", "fireteact", "fireglab"} {
		t.Run(face, func(t *testing.T) {
			m := get(face)
			unit, ok := m.Config.Systemd.Services[face]
			if !ok {
				t.Fatalf("no systemd.services.%s", face)
			}
			sc := unit.ServiceConfig
			if sc["Type"] != "notify" || sc["WatchdogSec"] == nil {
				t.Errorf("Type %v, WatchdogSec %v: want notify with a watchdog", sc["Type"], sc["WatchdogSec"])
			}
			if s, _ := sc["ExecStart"].(string); !strings.Contains(s, "/bin/"+face+" serve /nix/store/") {
				t.Errorf("ExecStart %q", s)
			}
			if c, _ := json.Marshal(sc["LoadCredential"]); string(c) != `["`+secrets[face]+`"]` {
				t.Errorf("LoadCredential %s, want [%s]", c, secrets[face])
			}
			if c, _ := json.Marshal(sc["CapabilityBoundingSet"]); string(c) != `["CAP_NET_ADMIN"]` {
				t.Errorf("CapabilityBoundingSet %s", c)
			}
			for k, want := range map[string]any{"ProtectSystem": "strict", "NoNewPrivileges": true, "DevicePolicy": "closed", "StateDirectory": face, "RuntimeDirectory": face} {
				if sc[k] != want {
					t.Errorf("%s = %v, want %v", k, sc[k], want)
				}
			}
			var base struct {
				Enable  bool
				Bridges map[string]struct {
					Cidr, Owner string
				}
			}
			if err := json.Unmarshal(m.Config.Services["microvm-base"], &base); err != nil {
				t.Fatal(err)
			}
			if br := base.Bridges[face+"0"]; !base.Enable || br.Owner != face {
				t.Errorf("microvm-base: enable %v, bridge %s0 %+v: want the face's bridge registered", base.Enable, face, br)
			}
			opts, _ := m.Options["services"].(map[string]any)[face].(map[string]any)
			pools, _ := opts["pools"].(map[string]any)["<name>"].(map[string]any)
			if opts["settings"] == nil || pools["size"] == nil {
				t.Errorf("services.%s lacks settings or pools.<name>.size: %v", face, opts)
			}
		})
	}

	base := get("microvm-base")
	for _, br := range []string{"fireactions0", "fireteact0", "fireglab0"} {
		fw := base.Config.Networking.Firewall.Interfaces[br]
		if b, _ := json.Marshal(fw.AllowedTCPPorts); string(b) != "[8089,5000,3128]" || len(fw.AllowedUDPPorts) != 1 || fw.AllowedUDPPorts[0] != 53 {
			t.Errorf("firewall on %s: %+v, want TCP 8089 (agent), 5000 (registry cache) and 3128 (proxy), UDP 53", br, fw)
		}
	}
	if base.Config.Boot.Kernel.Sysctl["net.ipv4.ip_forward"] != 1 || !contains(base.Config.Boot.KernelModules, "kvm-intel") {
		t.Errorf("microvm-base: sysctl %v, modules %v", base.Config.Boot.Kernel.Sysctl, base.Config.Boot.KernelModules)
	}
	var dns struct{ Settings map[string]any }
	if err := json.Unmarshal(base.Config.Services["dnsmasq"], &dns); err != nil {
		t.Fatalf("dnsmasq: %v", err)
	}
	if ifs, _ := json.Marshal(dns.Settings["interface"]); string(ifs) != `["fireactions0","fireglab0","fireteact0"]` {
		t.Errorf("dnsmasq serves %s, want the three bridges", ifs)
	}

	cache := get("registry-cache")
	if s, _ := cache.Config.Systemd.Services["registry-cache"].ServiceConfig["ExecStart"].(string); !strings.Contains(s, "/bin/zot serve ") {
		t.Errorf("registry-cache ExecStart %q", s)
	}
	var cacheBase struct {
		GuestPorts struct{ TCP []int }
		Cache      struct {
			RegistryPort, ProxyPort int
			CAFile                  *string
		}
	}
	if err := json.Unmarshal(cache.Config.Services["microvm-base"], &cacheBase); err != nil {
		t.Fatal(err)
	}
	if b, _ := json.Marshal(cacheBase.GuestPorts.TCP); string(b) != "[5000,3128]" || cacheBase.Cache.RegistryPort != 5000 || cacheBase.Cache.ProxyPort != 3128 || cacheBase.Cache.CAFile != nil {
		t.Errorf("registry-cache does not give guests its ports and endpoints (without a CA: nothing is intercepted): %s", cache.Config.Services["microvm-base"])
	}
	proxyUnit, ok := cache.Config.Systemd.Services["registry-cache-proxy"]
	if s, _ := proxyUnit.ServiceConfig["ExecStart"].(string); !ok || !strings.Contains(s, "/bin/squid --foreground") || proxyUnit.ServiceConfig["User"] != "registry-cache-proxy" {
		t.Errorf("registry-cache-proxy unit: %+v", proxyUnit.ServiceConfig)
	}
	if _, ok := cache.Config.Systemd.Services["registry-cache-ca"]; ok {
		t.Error("a CA is made although the proxy intercepts nothing")
	}

	// Profiles: every file a profile imports exists.
	var profiles map[string]struct{ Imports []string }
	if err := json.Unmarshal(mods["profiles"], &profiles); err != nil {
		t.Fatal(err)
	}
	if len(profiles) != 16 {
		t.Errorf("%d profiles, want 16 (9 sizes, 3 workloads, registry-cache, prod, dev, security-hardened)", len(profiles))
	}
	for name, p := range profiles {
		for _, f := range p.Imports {
			if _, err := os.Stat(f); err != nil {
				t.Errorf("profile %s imports %s: %v", name, f, err)
			}
		}
	}
}
