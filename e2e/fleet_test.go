//go:build e2e

package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// natsVersion is the nats-server scripts/build-peers.sh builds.
const natsVersion = "v2.15.3"

const fleetWorkflow = `on: [push]
jobs:
  one:
    runs-on: fireactions-fleet
    steps:
      - run: echo "fireactions-vm=$(hostname) one"
  two:
    runs-on: fireactions-fleet
    steps:
      - run: echo "fireactions-vm=$(hostname) two"
  three:
    runs-on: fireactions-fleet
    steps:
      - run: echo "fireactions-vm=$(hostname) three"
`

// startNATS runs the real nats-server with JetStream in ns on
// 127.0.0.1:port, its store under dir, until the test ends. The server
// requires a random token (in its config file, not argv): it returns the
// URL and the path of a file holding the token (fleet.token_file).
func startNATS(t *testing.T, ns *testNetns, dir, port string) (url, tokenFile string) {
	t.Helper()
	token, tokenFile := natsToken(t, dir)
	conf := filepath.Join(dir, "nats.conf")
	if err := os.WriteFile(conf, []byte("authorization { token: \""+token+"\" }\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	runNATSServer(t, ns, filepath.Join(dir, "nats.log"), "-c", conf, "-a", "127.0.0.1", "-p", port, "-js", "-sd", filepath.Join(dir, "js"))
	waitListening(t, ns, "127.0.0.1:"+port)
	return "nats://127.0.0.1:" + port, tokenFile
}

// natsToken makes a random NATS token and writes it to dir/nats-token
// (fleet.token_file), mode 600.
func natsToken(t *testing.T, dir string) (token, file string) {
	t.Helper()
	tok := make([]byte, 16)
	if _, err := rand.Read(tok); err != nil {
		t.Fatal(err)
	}
	token, file = hex.EncodeToString(tok), filepath.Join(dir, "nats-token")
	if err := os.WriteFile(file, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return token, file
}

// runNATSServer starts the real nats-server in ns with args, logging to
// logPath, until the test ends; it returns the process.
func runNATSServer(t *testing.T, ns *testNetns, logPath string, args ...string) *os.Process {
	t.Helper()
	bin := filepath.Join(cacheDir(), "nats-server-"+natsVersion, "nats-server")
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("nats-server not built (scripts/build-peers.sh builds it): %v", err)
	}
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := ns.command(context.Background(), bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait(); logf.Close() })
	return cmd.Process
}

// waitListening waits up to 30 s for a TCP listener on addr in ns.
func waitListening(t *testing.T, ns *testNetns, addr string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := ns.dial(context.Background(), "tcp", addr)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nats-server not listening on %s: %v", addr, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestFleetTwoHostsStartOneVMPerJob (issue 16, the first step of its
// end-to-end test): two orchestrator hosts, each with its own bridge and
// QEMU guests, one real nats-server and one real Gitea; both serve the
// same label with room for every job and none kept idle. A push queues
// three jobs each host sees: between them they start three VMs, and the
// three jobs succeed. Without the fleet each would start three.
func TestFleetTwoHostsStartOneVMPerJob(t *testing.T) {
	r := newGiteaRig(t, "fa-flt")
	natsDir := filepath.Join(r.work, "nats")
	if err := os.MkdirAll(natsDir, 0o700); err != nil {
		t.Fatal(err)
	}
	url, tokenFile := startNATS(t, r.ns, natsDir, "14222")
	var hosts []*orchestrator
	var logs []string
	for i, cidr := range []string{"10.251.0.0/24", "10.252.0.0/24"} {
		id := fmt.Sprintf("flt-%d", i)
		dir := filepath.Join(r.work, id)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		c := r.config(id, dir, fmt.Sprintf("faflt%d", i), cidr)
		c.Metrics = &metricsConfig{Listen: ""}
		c.Pools = []poolConfig{r.jobPool("fleet", "fireactions-fleet", 0, 3)}
		c.Fleet = &fleetConfig{URLs: []string{url}, TokenFile: tokenFile, ClaimTTL: "10s"}
		cfg := filepath.Join(dir, "fireactions.yaml")
		c.write(t, cfg)
		o := startOrchestrator(t, r.ns, r.bin, cfg, c.StateDir)
		hosts, logs = append(hosts, o), append(logs, o.log)
	}
	for _, o := range hosts {
		o.waitFor(t, 2*time.Minute, "serving in the fleet", func() bool {
			return len(logLines(o.log, regexpMust(`msg="joined the fleet"`))) > 0 && len(logLines(o.log, regexpMust(`msg=serving`))) > 0
		})
	}
	r.gitea.api(http.MethodPost, "/api/v1/user/repos", map[string]any{"name": "fleet", "default_branch": "main"}, nil)
	tree := filepath.Join(r.work, "repo")
	writeFile(t, filepath.Join(tree, ".gitea/workflows/fleet.yml"), 0o644, fleetWorkflow)
	r.gitea.push(tree, "ci/fleet", "three jobs for the fleet")
	done := hosts[0].waitJobsDone(t, 6*time.Minute, "the three jobs", r.gitea, "ci/fleet", 3)
	for _, j := range done {
		if j.Conclusion != "success" {
			t.Errorf("job %d ended %q", j.ID, j.Conclusion)
		}
	}
	for _, o := range hosts {
		o.terminate(t)
	}
	for _, o := range hosts {
		o.waitExit(t, 3*time.Minute)
	}
	started := 0
	var per []int
	for _, l := range logs {
		n := len(logLines(l, regexpMust(`msg="vm booting"`)))
		per = append(per, n)
		started += n
	}
	t.Logf("FIGURE fleet: VMs started per host %v for 3 jobs", per)
	if started != 3 {
		t.Errorf("two hosts in a fleet started %v VMs for 3 jobs; want 3 in all", per)
	}
	if names := giteaRunnerNames(r.gitea); len(names) != 0 {
		t.Errorf("runners left at Gitea: %v", names)
	}
}
