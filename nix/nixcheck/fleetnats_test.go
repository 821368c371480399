//go:build nixcheck

package nixcheck

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
)

// The Colmena tag fleet-nats: the three tagged hosts run services.nats
// as one JetStream cluster (routes to the other two, the token from a
// file through LoadCredential, client and cluster ports open); the
// configuration they render is read by nats-server's own parser, with
// the environment the start script gives it; every host's orchestrator
// joins the fleet at the three URLs with the token. A registry with 2 or
// 4 tagged hosts is refused.
func TestFleetNatsTag(t *testing.T) {
	var f struct {
		Hosts map[string]struct {
			report
			Nats struct {
				Enable, Jetstream bool
				ServerName        string
				Port              int
				ServiceConfig     map[string]any
				Start, Conf       string
			}
			TCPPorts []int
		}
		Errors map[string][]string
	}
	eval(t, evalChecks+".fleetNats", &f)
	const token = "fleet-token-0123"
	urls := []string{"nats://10.0.0.1:4222", "nats://10.0.0.2:4222", "nats://10.0.0.3:4222"}
	for name, h := range f.Hosts {
		if len(h.Assertions) > 0 || !h.Checked {
			t.Errorf("%s: checked %v, failed assertions %q", name, h.Checked, h.Assertions)
		}
		u := h.Units["fireteact"]
		checkUnit(t, name, "fireteact", u)
		var cfg struct {
			Fleet *struct {
				URLs      []string `json:"urls"`
				TokenFile string   `json:"token_file"`
				Replicas  int      `json:"replicas"`
			}
		}
		if err := json.Unmarshal(u.Settings, &cfg); err != nil {
			t.Fatal(err)
		}
		if cfg.Fleet == nil || !slices.Equal(cfg.Fleet.URLs, urls) || cfg.Fleet.TokenFile != "/run/credentials/fireteact.service/fleet-token" || cfg.Fleet.Replicas != 3 {
			t.Errorf("%s: fleet %+v; want the cluster's URLs %v, the token and 3 replicas", name, cfg.Fleet, urls)
		}
		if !slices.Contains(strs(u.ServiceConfig["LoadCredential"]), "fleet-token:/run/secrets/fleet-nats-token") {
			t.Errorf("%s: LoadCredential %v lacks the fleet's token", name, u.ServiceConfig["LoadCredential"])
		}
		if name == "worker" {
			if h.Nats.Enable || slices.Contains(h.TCPPorts, 4222) {
				t.Errorf("worker (no tag): nats %v, ports %v", h.Nats.Enable, h.TCPPorts)
			}
			continue
		}
		n := h.Nats
		if !n.Enable || !n.Jetstream || n.ServerName != name || n.Port != 4222 {
			t.Errorf("%s: services.nats %+v", name, n)
		}
		if !slices.Contains(h.TCPPorts, 4222) || !slices.Contains(h.TCPPorts, 6222) {
			t.Errorf("%s: firewall TCP ports %v; want 4222 and 6222", name, h.TCPPorts)
		}
		if !slices.Equal(strs(n.ServiceConfig["LoadCredential"]), []string{"fleet-nats-token:/run/secrets/fleet-nats-token"}) {
			t.Errorf("%s: nats LoadCredential %v", name, n.ServiceConfig["LoadCredential"])
		}
		checkTokenRefused(t, name, n.Start)
		opts := parseNatsConf(t, n.Start, n.Conf, token)
		var peers []string
		for _, r := range opts.Routes {
			pw, _ := r.User.Password()
			if r.User.Username() != "fleet" || pw != token || r.Port() != "6222" {
				t.Errorf("%s: route %s", name, r.Redacted())
			}
			peers = append(peers, r.Hostname())
		}
		slices.Sort(peers)
		var want []string
		for i, a := range []string{"10.0.0.1", "10.0.0.2", "10.0.0.3"} {
			if name != []string{"nats-1", "nats-2", "nats-3"}[i] {
				want = append(want, a)
			}
		}
		if !slices.Equal(peers, want) || opts.Cluster.Name != "fireactions" || opts.Cluster.Port != 6222 ||
			opts.Cluster.Username != "fleet" || opts.Cluster.Password != token || opts.Authorization != token ||
			!opts.JetStream || opts.ServerName != name || opts.Port != 4222 {
			t.Errorf("%s: nats-server reads routes %v (want %v), cluster %+v, token %v, jetstream %v, name %q, port %d",
				name, peers, want, opts.Cluster, opts.Authorization == token, opts.JetStream, opts.ServerName, opts.Port)
		}
		if strings.Contains(n.Conf, token) || strings.Contains(n.Start, token) {
			t.Errorf("%s: the token is in the store", name)
		}
	}
	if len(f.Hosts) != 4 {
		t.Errorf("%d hosts", len(f.Hosts))
	}
	if len(f.Errors["three"]) != 0 || len(f.Errors["two"]) != 1 || len(f.Errors["four"]) != 1 ||
		!strings.Contains(f.Errors["two"][0], "fleet-nats") {
		t.Errorf("registry errors %v; want none with 3 tagged hosts, one naming the tag with 2 or 4", f.Errors)
	}
}

// parseNatsConf reads conf with nats-server's parser in the environment
// the start script would give it, the token file holding token.
func parseNatsConf(t *testing.T, start, conf, token string) *server.Options {
	t.Helper()
	if !strings.Contains(start, `FLEET_NATS_TOKEN="$(`) || !strings.Contains(start, `"$CREDENTIALS_DIRECTORY/fleet-nats-token")"`) {
		t.Fatalf("the start script does not read the token from its credential:\n%s", start)
	}
	t.Setenv("FLEET_NATS_TOKEN", token)
	for _, m := range regexp.MustCompile(`export (FLEET_NATS_ROUTE_\d+)="([^"]*)"`).FindAllStringSubmatch(start, -1) {
		t.Setenv(m[1], strings.ReplaceAll(m[2], "$FLEET_NATS_TOKEN", token))
	}
	p := filepath.Join(t.TempDir(), "nats.conf")
	if err := os.WriteFile(p, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(p)
	if err != nil {
		t.Fatalf("nats-server refuses the configuration: %v\n%s", err, conf)
	}
	return opts
}

// services.nats is declared with nixpkgs' types: a port out of range or
// settings that are no JSON value fail; the positive control passes.
func TestNatsOptionTypes(t *testing.T) {
	expr := func(v string) string {
		return `((import ./nix/eval { }).nixos [ { services.nats = { enable = true; ` + v + ` }; } ]).config.services.nats.settings`
	}
	if _, err := evalRaw(t, expr(`port = 4223;`)); err != nil {
		t.Fatalf("positive control: %v", err)
	}
	for _, bad := range []string{`port = 70000;`, `port = "4222";`, `settings.x = (a: a);`, `jetstream = "yes";`, `nosuch = 1;`} {
		if _, err := evalRaw(t, expr(bad)); err == nil {
			t.Errorf("services.nats with %s evaluates", bad)
		}
	}
}

// checkTokenRefused runs start, the nats unit's start script, up to its
// exec of nats-server, with tokens in its credential: it refuses, naming
// the token file, tokens nats-server would read as other than the string
// (base64's + / =, #, digits, 1k, true, a space, none), and passes
// URL-safe words starting with a letter, which nats-server reads as the
// token (the positive control).
func checkTokenRefused(t *testing.T, host, start string) {
	t.Helper()
	script := regexp.MustCompile(`(?m)^\s*exec .*nats-server.*$`).ReplaceAllString(start, "exit 0")
	script = regexp.MustCompile(`[^\s"(]*/bin/cat `).ReplaceAllString(script, "cat ")
	run := func(token string) (string, error) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "fleet-nats-token"), []byte(token), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("bash", "-c", script)
		cmd.Env = append(os.Environ(), "CREDENTIALS_DIRECTORY="+dir)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	for _, bad := range []string{"dG9rZW4+Lz0=", "tok#en", "0123", "1k", "true", "Off", "tok en", ""} {
		if out, err := run(bad); err == nil || !strings.Contains(out, "/run/secrets/fleet-nats-token") {
			t.Errorf("%s: the start script with token %q: %v, %q; want refused naming the token file", host, bad, err, out)
		}
	}
	for _, good := range []string{"fleet-token-0123", "a", "Tok.en_~9-"} {
		if out, err := run(good); err != nil {
			t.Errorf("%s: the start script refuses token %q: %v, %s", host, good, err, out)
		}
	}
}
