//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/fleet/fleettest"
)

// startOperatorNATS runs the real nats-server in operator (JWT) mode,
// the one that takes .creds files, trusting op (accounts preloaded in a
// memory resolver), on 127.0.0.1:port in ns; it returns the URL.
func startOperatorNATS(t *testing.T, ns *testNetns, dir, port string, op *fleettest.Operator) string {
	t.Helper()
	var pubs []string
	for pub := range op.Accounts {
		pubs = append(pubs, pub)
	}
	sort.Strings(pubs)
	var preload strings.Builder
	for _, pub := range pubs {
		fmt.Fprintf(&preload, "  %s: \"%s\"\n", pub, op.Accounts[pub])
	}
	conf := filepath.Join(dir, "nats-operator.conf")
	text := fmt.Sprintf("listen: 127.0.0.1:%s\noperator: \"%s\"\nsystem_account: %s\nresolver: MEMORY\nresolver_preload: {\n%s}\njetstream { store_dir: \"%s\" }\n",
		port, op.JWT, op.SystemAccount, preload.String(), filepath.Join(dir, "js-operator"))
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	runNATSServer(t, ns, filepath.Join(dir, "nats-operator.log"), "-c", conf)
	waitListening(t, ns, "127.0.0.1:"+port)
	return "nats://127.0.0.1:" + port
}

// TestFleetBadInputAtStart (issue 16): `fireactions serve` against real
// nats-servers with bad fleet input, each a clear error at start: NATS
// unreachable (on_unreachable fail: exits naming the URL; local: serves
// alone, saying so), a wrong token, credentials of an untrusted account
// (operator-mode server; trusted credentials join: the positive
// control), and a second host with a live host's host_id (the first
// keeps serving).
func TestFleetBadInputAtStart(t *testing.T) {
	r := newGiteaRig(t, "f3-bad")
	natsDir := filepath.Join(r.work, "nats")
	if err := os.MkdirAll(natsDir, 0o700); err != nil {
		t.Fatal(err)
	}
	url, tokenFile := startNATS(t, r.ns, natsDir, "14230")
	op := fleettest.NewOperator(t)
	opURL := startOperatorNATS(t, r.ns, natsDir, "14231", op)
	wrongToken := filepath.Join(natsDir, "wrong-token")
	writeFile(t, wrongToken, 0o600, "not-the-token\n")

	n := 0
	start := func(hostID string, fl *fleetConfig) *orchestrator {
		t.Helper()
		dir := filepath.Join(r.work, fmt.Sprintf("h%d", n))
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		c := r.config(hostID, dir, fmt.Sprintf("f3bad%d", n), fmt.Sprintf("10.166.%d.0/24", n))
		c.Metrics = &metricsConfig{Listen: ""}
		c.Pools = []poolConfig{r.jobPool("bad", "fireactions-bad", 0, 1)}
		c.Fleet = fl
		cfg := filepath.Join(dir, "fireactions.yaml")
		c.write(t, cfg)
		n++
		return startOrchestrator(t, r.ns, r.bin, cfg, c.StateDir)
	}
	// failsWith: o exits non-zero within 2 minutes, its log holding want.
	failsWith := func(what string, o *orchestrator, want ...string) {
		t.Helper()
		select {
		case <-o.exited:
		case <-time.After(2 * time.Minute):
			t.Fatalf("%s: serve still running after 2m; want it to exit with an error", what)
		}
		b, _ := os.ReadFile(o.log)
		if o.exitErr == nil {
			t.Errorf("%s: serve exited 0; want an error", what)
		}
		for _, w := range want {
			if !strings.Contains(string(b), w) {
				t.Errorf("%s: log lacks %q:\n%s", what, w, b)
			}
		}
	}
	serves := func(what string, o *orchestrator, want string) {
		t.Helper()
		o.waitFor(t, 2*time.Minute, what, func() bool {
			return len(logLines(o.log, regexpMust(`msg=serving`))) > 0 && len(logLines(o.log, regexpMust(want))) > 0
		})
	}
	unreachable := "nats://127.0.0.1:14299"
	failsWith("NATS unreachable, on_unreachable fail",
		start("bad-0", &fleetConfig{URLs: []string{unreachable}, TokenFile: tokenFile, ClaimTTL: "2s"}),
		"connect to NATS "+unreachable, "fleet.on_unreachable: fail")
	local := start("bad-1", &fleetConfig{URLs: []string{unreachable}, TokenFile: tokenFile, ClaimTTL: "2s", OnUnreachable: "local"})
	serves("NATS unreachable, on_unreachable local: serving alone", local, `fleet unreachable: serving alone`)
	local.terminate(t)
	local.waitExit(t, time.Minute)
	failsWith("a wrong token", start("bad-2", &fleetConfig{URLs: []string{url}, TokenFile: wrongToken, ClaimTTL: "2s"}),
		"connect to NATS "+url, "Authorization Violation")
	failsWith("credentials of an untrusted account", start("bad-3", &fleetConfig{URLs: []string{opURL}, CredsFile: op.ForeignCreds, ClaimTTL: "2s"}),
		"connect to NATS "+opURL, "Authorization Violation")
	trusted := start("bad-4", &fleetConfig{URLs: []string{opURL}, CredsFile: op.Creds, ClaimTTL: "2s"})
	serves("trusted credentials (positive control)", trusted, `msg="joined the fleet"`)
	first := start("twin", &fleetConfig{URLs: []string{url}, TokenFile: tokenFile, ClaimTTL: "2s"})
	serves("the first host of host_id twin", first, `msg="joined the fleet"`)
	failsWith("a second live host with host_id twin", start("twin", &fleetConfig{URLs: []string{url}, TokenFile: tokenFile, ClaimTTL: "2s"}),
		"another live host uses this host_id: \"twin\"")
	select {
	case <-first.exited:
		t.Errorf("the first host of host_id twin exited: %v", first.exitErr)
	default:
	}
	for _, o := range []*orchestrator{trusted, first} {
		o.terminate(t)
		o.waitExit(t, 2*time.Minute)
	}
}
