//go:build nixcheck

package nixcheck

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nixos-fireactions/nixos-fireactions/netplan"
)

// golden compares got with testdata/golden/name, or rewrites it with
// -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	p := filepath.Join("testdata", "golden", name)
	if *update {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("%v (go test -tags nixcheck ./nix/nixcheck -run Golden -update writes it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s differs from the golden file:\n%s\nwant:\n%s", name, got, want)
	}
}

// Zot's configuration, with the module's defaults, is the golden one:
// anonymous read only, every registry on demand under /<name> but Docker
// Hub at the root and last, retention by last pull, garbage collection.
func TestZotConfigGolden(t *testing.T) {
	var raw json.RawMessage
	eval(t, checks+".zot.config", &raw)
	var indented bytes.Buffer
	if err := json.Indent(&indented, raw, "", "  "); err != nil {
		t.Fatal(err)
	}
	golden(t, "zot.json", append(indented.Bytes(), '\n'))

	var z struct {
		Storage struct {
			GC        bool `json:"gc"`
			Retention struct {
				Policies []struct {
					KeepTags []map[string]any `json:"keepTags"`
				} `json:"policies"`
			} `json:"retention"`
		} `json:"storage"`
		Extensions struct {
			Sync struct {
				Registries []struct {
					URLs    []string `json:"urls"`
					Content []struct{ Prefix, Destination string }
				} `json:"registries"`
			} `json:"sync"`
		} `json:"extensions"`
	}
	if err := json.Unmarshal(raw, &z); err != nil {
		t.Fatal(err)
	}
	regs := z.Extensions.Sync.Registries
	var dests []string
	for _, r := range regs {
		dests = append(dests, r.URLs[0]+"→"+r.Content[0].Destination)
	}
	want := "https://gcr.io→/gcr.io https://ghcr.io→/ghcr.io https://quay.io→/quay.io https://registry-1.docker.io→/"
	if got := strings.Join(dests, " "); got != want {
		t.Errorf("registries %s, want %s", got, want)
	}
	if !z.Storage.GC || len(z.Storage.Retention.Policies) != 1 || z.Storage.Retention.Policies[0].KeepTags[0]["pulledWithin"] != "336h" {
		t.Errorf("storage: gc %v, retention %+v", z.Storage.GC, z.Storage.Retention)
	}
}

// squid.conf for each SSL bump setting is the golden one; "selective"
// without domains is exactly "off": nothing on 443 is intercepted.
func TestSquidConfigsGolden(t *testing.T) {
	var s struct {
		Configs    map[string]string `json:"configs"`
		Intercepts map[string]bool   `json:"intercepts"`
	}
	eval(t, checks+".squid", &s)
	for _, mode := range []string{"off", "selective", "selective-none", "all", "off-block-private"} {
		golden(t, "squid-"+mode+".conf", []byte(s.Configs[mode]))
	}
	if s.Configs["selective-none"] != s.Configs["off"] {
		t.Errorf("selective without domains differs from off:\n%s", s.Configs["selective-none"])
	}
	for mode, want := range map[string]bool{"off": false, "selective-none": false, "selective": true, "all": true} {
		if s.Intercepts[mode] != want {
			t.Errorf("%s intercepts %v, want %v", mode, s.Intercepts[mode], want)
		}
		conf := s.Configs[mode]
		if has := strings.Contains(conf, "ssl-bump") || strings.Contains(conf, "ssl_bump"); has != want {
			t.Errorf("%s: SSL bump directives present %v, want %v:\n%s", mode, has, want, conf)
		}
	}
	if c := s.Configs["selective"]; !strings.Contains(c, "acl bump_domains ssl::server_name .npmjs.org files.pythonhosted.org\n") ||
		!strings.HasSuffix(strings.SplitAfter(c, "ssl_bump bump bump_domains\n")[0], "ssl_bump bump bump_domains\n") ||
		!strings.Contains(c, "ssl_bump splice all\n") || strings.Contains(c, "ssl_bump bump all") {
		t.Errorf("selective bumps more than its domains:\n%s", c)
	}
	for mode, conf := range s.Configs {
		for _, want := range []string{"http_access deny to_host\n", "http_access allow guests\n", "http_access deny all\n"} {
			if !strings.Contains(conf, want) {
				t.Errorf("%s lacks %q", mode, want)
			}
		}
		// 0.0.0.0 and :: reach the host's loopback on Linux: refused with it.
		if !strings.Contains(conf, "\nacl to_host dst 127.0.0.0/8 0.0.0.0/32 ::1 ::/128 10.200.0.1 ") {
			t.Errorf("%s: the host's unspecified addresses are not refused:\n%s", mode, conf)
		}
		// No guest reaches another through the proxy, whatever the
		// firewall keeps apart: every bridge's network is refused as a
		// destination, before the guests are let in.
		if !deniedBeforeAllowed(conf, "to_guests") || !strings.Contains(conf, "\nacl to_guests dst 10.200.0.0/24 10.202.0.0/24 10.201.0.0/24\n") {
			t.Errorf("%s: the guests' networks are not refused as destinations:\n%s", mode, conf)
		}
		// The private ranges are refused exactly when the host blocks
		// them to guests (security.blockPrivateNetworks), all of those
		// the orchestrators' firewall drops.
		blocks := mode == "off-block-private"
		if deniedBeforeAllowed(conf, "to_private") != blocks {
			t.Errorf("%s: private ranges refused %v, want %v:\n%s", mode, !blocks, blocks, conf)
		}
		if blocks {
			_, acl, _ := strings.Cut(conf, "\nacl to_private dst ")
			acl, _, _ = strings.Cut(acl, "\n")
			for _, r := range netplan.PrivateRanges() {
				if !slices.Contains(strings.Fields(acl), r) {
					t.Errorf("%s: %s, which the firewall drops, is not refused by the proxy (to_private %q)", mode, r, acl)
				}
			}
		}
		// A guest makes Squid log a line per request: to syslog (the
		// journal's caps), never to a file nothing rotates.
		if !strings.Contains(conf, "\naccess_log syslog:daemon.info\n") || !strings.Contains(conf, "\ncache_log /dev/null\n") {
			t.Errorf("%s: Squid's logs are not syslog's:\n%s", mode, conf)
		}
		for _, line := range strings.Split(conf, "\n") {
			if f := strings.Fields(line); len(f) > 1 && (f[0] == "access_log" || f[0] == "cache_log" || f[0] == "cache_store_log") &&
				f[1] != "syslog:daemon.info" && f[1] != "/dev/null" && f[1] != "none" {
				t.Errorf("%s: %q writes a log file that grows without bound", mode, line)
			}
		}
	}
}

// The CA is made on the host, by the rendered script run here with
// openssl: a CA certificate anyone may read, a key only its owner may,
// and a second run keeps both.
func TestCAScriptMakesTheCAOnce(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Fatalf("openssl: %v", err)
	}
	dir := filepath.Join(t.TempDir(), "ca")
	var script string
	eval(t, `(import ./nix/lib).registrycache.caScript { owner = "root"; group = "root"; dir = "`+dir+`"; }`, &script)
	run := func() {
		t.Helper()
		if out, err := exec.Command("sh", "-c", script).CombinedOutput(); err != nil {
			t.Fatalf("the CA script failed: %v\n%s", err, out)
		}
	}
	run()
	key, err := os.Stat(filepath.Join(dir, "ca.key"))
	if err != nil || key.Mode().Perm() != 0o400 {
		t.Fatalf("key: %v, mode %v; want 0400", err, key.Mode())
	}
	certPEM, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(filepath.Join(dir, "ca.pem")); fi.Mode().Perm() != 0o644 {
		t.Errorf("certificate mode %v, want 0644", fi.Mode())
	}
	block, _ := pem.Decode(certPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		t.Fatalf("ca.pem:\n%s", certPEM)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil || !cert.IsCA || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Fatalf("not a CA certificate: %v %+v", err, cert)
	}
	run()
	again, _ := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if !bytes.Equal(again, certPEM) {
		t.Error("a second run replaced the CA")
	}
	if strings.Contains(script, "/nix/store") || strings.Contains(script, "PRIVATE KEY") {
		t.Errorf("the script names the store or holds a key:\n%s", script)
	}
}

// The orchestrators get the cache on their own gateway, the proxy, and
// the CA only when something is intercepted; the binary accepts it.
func TestCacheReachesTheOrchestrators(t *testing.T) {
	var configs map[string]json.RawMessage
	eval(t, checks+".registryCache.settings", &configs)
	for mode, wantCA := range map[string]string{"off": "", "selective": "/var/lib/registry-cache-ca/ca.pem"} {
		raw := configs[mode]
		if code, stderr := validate(t, "cache-"+mode, raw); code != 0 {
			t.Fatalf("%s: fireactions validate rejected it:\n%s\n%s", mode, stderr, raw)
		}
		var c struct {
			Network struct {
				AllowTCPPorts []int `json:"allow_tcp_ports"`
			}
			RegistryCache struct {
				Mirrors []struct {
					Registry string
					URLs     []string
				}
				HTTPProxy  string `json:"http_proxy"`
				HTTPSProxy string `json:"https_proxy"`
				CAFile     string `json:"ca_file"`
			} `json:"registry_cache"`
		}
		if err := json.Unmarshal(raw, &c); err != nil {
			t.Fatal(err)
		}
		rc := c.RegistryCache
		mirrors := map[string]string{}
		for _, m := range rc.Mirrors {
			mirrors[m.Registry] = strings.Join(m.URLs, ",")
		}
		if mirrors["docker.io"] != "http://10.201.0.1:5000" || mirrors["ghcr.io"] != "http://10.201.0.1:5000/ghcr.io" || len(mirrors) != 4 {
			t.Errorf("%s: mirrors %v", mode, mirrors)
		}
		if rc.HTTPProxy != "http://10.201.0.1:3128" || rc.HTTPSProxy != rc.HTTPProxy || rc.CAFile != wantCA {
			t.Errorf("%s: proxy %q/%q, ca_file %q (want %q)", mode, rc.HTTPProxy, rc.HTTPSProxy, rc.CAFile, wantCA)
		}
		if b, _ := json.Marshal(c.Network.AllowTCPPorts); string(b) != "[5000,3128]" {
			t.Errorf("%s: allow_tcp_ports %s, want the cache's ports", mode, b)
		}
	}
}

// deniedBeforeAllowed reports whether conf refuses the ACL acl
// (http_access deny acl) before it lets the guests in.
func deniedBeforeAllowed(conf, acl string) bool {
	deny := strings.Index(conf, "\nhttp_access deny "+acl+"\n")
	allow := strings.Index(conf, "\nhttp_access allow guests\n")
	return deny >= 0 && allow >= 0 && deny < allow
}
