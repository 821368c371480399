//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The three-node NATS cluster of TestFleetThreeHostsBurstKillAndCut, in
// the Gitea namespace: client ports natsPorts, cluster routes 1622x,
// monitoring 822x (for /healthz).
var natsPorts = []string{"14221", "14222", "14223"}

// startNATSCluster runs three real nats-servers with JetStream joined by
// cluster routes in ns, each requiring one random token, and waits until
// every node's JetStream is healthy (a meta leader elected). It returns
// the token file.
func startNATSCluster(t *testing.T, ns *testNetns, dir string) (tokenFile string) {
	t.Helper()
	token, tokenFile := natsToken(t, dir)
	var routes []string
	for i := range natsPorts {
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:1622%d", i+1))
	}
	for i, port := range natsPorts {
		d := filepath.Join(dir, fmt.Sprintf("n%d", i+1))
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
		conf := filepath.Join(d, "nats.conf")
		text := fmt.Sprintf(`server_name: f3n%d
listen: 127.0.0.1:%s
http: 127.0.0.1:822%d
authorization { token: "%s" }
jetstream { store_dir: "%s" }
cluster {
  name: f3
  listen: 127.0.0.1:1622%d
  routes: [%s]
}
`, i+1, port, i+1, token, filepath.Join(d, "js"), i+1, strings.Join(routes, ", "))
		if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		runNATSServer(t, ns, filepath.Join(d, "nats.log"), "-c", conf)
	}
	c := ns.httpClient()
	waitFor(t, time.Minute, "the NATS cluster's JetStream healthy on every node", func() bool {
		for i := range natsPorts {
			resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:822%d/healthz", i+1))
			if err != nil {
				return false
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return false
			}
		}
		return true
	})
	return tokenFile
}

// relay forwards TCP connections accepted on addr in from to target in
// to, until the test ends: a host namespace reaches Gitea and NATS, which
// live in the Gitea namespace, through it.
func relay(t *testing.T, from *testNetns, addr string, to *testNetns, target string) {
	t.Helper()
	ln, err := from.listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				s, err := to.dial(ctx, "tcp", target)
				cancel()
				if err != nil {
					return
				}
				defer s.Close()
				go func() { _, _ = io.Copy(s, c); s.(*net.TCPConn).CloseWrite() }()
				_, _ = io.Copy(c, s)
			}()
		}
	}()
}

// fleetReachable reads fireactions_fleet_reachable from the metrics
// endpoint on 127.0.0.1:9464 in ns: "1", "0", or "" when unread.
func fleetReachable(ns *testNetns) string {
	resp, err := ns.httpClient().Get("http://127.0.0.1:9464/metrics")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "fireactions_fleet_reachable "); ok {
			return v
		}
	}
	return ""
}

// fleetBurstWorkflow is n jobs for label, each a few seconds long.
func fleetBurstWorkflow(label string, n int) string {
	var b strings.Builder
	b.WriteString("on: [push]\njobs:\n")
	for i := range n {
		fmt.Fprintf(&b, "  j%d:\n    runs-on: %s\n    steps:\n      - run: echo \"fireactions-vm=$(hostname) j%d\"; sleep 8\n", i, label, i)
	}
	return b.String()
}

// burstHost is one orchestrator host of the burst: its namespace (its
// own bridge and QEMU guests) and its process.
type burstHost struct {
	ns *testNetns
	o  *orchestrator
}

// vmsStarted counts the VMs h's log says it started.
func (h burstHost) vmsStarted() int { return len(logLines(h.o.log, regexpMust(`msg="vm booting"`))) }

// vmsFailed counts the VMs h's log says ended not ok other than by the
// drain (such as a boot that timed out on the loaded machine): a VM
// started again for the same demand, not a second host's. A VM left
// idle and drained at the end is not one: it is what a fleet saves.
func (h burstHost) vmsFailed() int {
	return len(logLines(h.o.log, regexpMust(`msg="vm gone" .* ok=false err=[^d]`))) // not err=drain
}

const (
	burstJobs = 3 // more than one host's max
	burstMax  = 2 // each host's pool max
)

// startBurstHosts starts three hosts serving label, each in namespace
// nsPrefix+i (reaching Gitea and NATS through relays into the rig's
// namespace), on bridge bridgePrefix+i in 10.(subnet+i).0.0/24, with the
// fleet section fl (nil: none), and waits until they serve.
func startBurstHosts(t *testing.T, r *giteaRig, nsPrefix, bridgePrefix string, subnet int, label string, fl *fleetConfig) []burstHost {
	t.Helper()
	var hosts []burstHost
	for i := range 3 {
		id := fmt.Sprintf("%s%d", nsPrefix, i)
		ns := newNetns(t, id)
		relay(t, ns, "0.0.0.0:"+giteaPort, r.ns, "127.0.0.1:"+giteaPort)
		for _, p := range natsPorts {
			relay(t, ns, "127.0.0.1:"+p, r.ns, "127.0.0.1:"+p)
		}
		dir := filepath.Join(r.work, id)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		c := r.config(id, dir, fmt.Sprintf("%s%d", bridgePrefix, i), fmt.Sprintf("10.%d.0.0/24", subnet+i))
		c.Metrics = &metricsConfig{Listen: "127.0.0.1:9464"}
		c.Pools = []poolConfig{r.jobPool("burst", label, 0, burstMax)}
		c.Fleet = fl
		cfg := filepath.Join(dir, "fireactions.yaml")
		c.write(t, cfg)
		hosts = append(hosts, burstHost{ns: ns, o: startOrchestrator(t, ns, r.bin, cfg, c.StateDir)})
	}
	for _, h := range hosts {
		h.o.waitFor(t, 2*time.Minute, "serving", func() bool {
			return len(logLines(h.o.log, regexpMust(`msg=serving`))) > 0 &&
				(fl == nil || len(logLines(h.o.log, regexpMust(`msg="joined the fleet"`))) > 0)
		})
	}
	return hosts
}

// pushBurst pushes fleetBurstWorkflow(label) to a new repository repo.
func pushBurst(t *testing.T, r *giteaRig, repo, label string) {
	t.Helper()
	r.gitea.api(http.MethodPost, "/api/v1/user/repos", map[string]any{"name": repo, "default_branch": "main"}, nil)
	tree := filepath.Join(r.work, repo)
	writeFile(t, filepath.Join(tree, ".gitea/workflows/burst.yml"), 0o644, fleetBurstWorkflow(label, burstJobs))
	r.gitea.push(tree, "ci/"+repo, "a burst of jobs")
}

// TestFleetThreeHostsBurstKillAndCut (issue 16's end-to-end test): a
// three-node NATS cluster (real nats-servers, cluster routes, buckets
// with replicas 3), three orchestrator hosts each in its own network
// namespace with its own bridge and QEMU guests, one real Gitea. A burst
// of 3 jobs (each host's max is 2) is pushed; the first host to boot a
// VM for a claim is killed (-9, its VMs too, as a machine dies); the
// first live host whose VM runs a job is cut from NATS (iptables DROP in
// its namespace): its fleet_reachable drops to 0, it starts no VM while
// cut, its job completes, and when the cut ends it rejoins (reachable 1)
// with no restart. Every job succeeds; the VMs started are the jobs plus
// those the killed host booted and any that failed to boot (min_idle is
// 0). Then the same burst on three hosts without the fleet section,
// side by side: each host sees every job and starts up to its max.
func TestFleetThreeHostsBurstKillAndCut(t *testing.T) {
	r := newGiteaRig(t, "f3-git")
	natsDir := filepath.Join(r.work, "nats")
	if err := os.MkdirAll(natsDir, 0o700); err != nil {
		t.Fatal(err)
	}
	tokenFile := startNATSCluster(t, r.ns, natsDir)
	var urls []string
	for _, p := range natsPorts {
		urls = append(urls, "nats://127.0.0.1:"+p)
	}
	const ttl = 6 * time.Second
	fl := &fleetConfig{URLs: urls, TokenFile: tokenFile, ClaimTTL: ttl.String(), Replicas: 3}
	hosts := startBurstHosts(t, r, "f3h", "f3br", 160, "fireactions-burst", fl)
	pushBurst(t, r, "burst", "fireactions-burst")

	// Kill the first host that boots a VM for a job it claimed.
	deadAt := -1
	waitFor(t, 3*time.Minute, "a host booting a VM", func() bool {
		for i, h := range hosts {
			if h.vmsStarted() > 0 {
				deadAt = i
				return true
			}
		}
		return false
	})
	dead := hosts[deadAt]
	_ = dead.o.cmd.Process.Signal(syscall.SIGKILL)
	<-dead.o.exited
	for pid := range qemuUnder(filepath.Join(r.work, dead.ns.name) + "/") {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	killedAt, deadBooted := time.Now(), dead.vmsStarted()
	live := slices.Delete(slices.Clone(hosts), deadAt, deadAt+1)
	t.Logf("host %s killed (-9, its VMs too) after booting %d VM(s)", dead.ns.name, deadBooted)

	// Cut from NATS the first live host whose VM runs a job.
	var cut burstHost
	var busyVM string
	waitFor(t, 4*time.Minute, "a VM of a live host running a job", func() bool {
		for _, h := range live {
			if l := logLines(h.o.log, regexpMust(`msg="vm busy" pool=burst vm=\w+`)); len(l) > 0 {
				cut, busyVM = h, regexpMust(`vm=(\w+)`).FindStringSubmatch(l[0])[1]
				return true
			}
		}
		return false
	})
	t.Logf("host %s cut from NATS while its VM %s runs a job", cut.ns.name, busyVM)
	jobDone := regexpMust(`msg="vm gone" pool=burst vm=` + busyVM + ` ok=true`)
	drop := []string{"-p", "tcp", "-m", "multiport", "--dports", strings.Join(natsPorts, ","), "-j", "DROP"}
	run(t, "ip", append([]string{"netns", "exec", cut.ns.name, "iptables", "-I", "INPUT"}, drop...)...)
	cutAt := time.Now()
	cut.o.waitFor(t, 2*ttl+10*time.Second, "the cut host saying it is cut off (fireactions_fleet_reachable 0)", func() bool { return fleetReachable(cut.ns) == "0" })
	t.Logf("FIGURE fleet cut: the cut host reachable 0 %s after the cut", time.Since(cutAt).Round(time.Second))
	bootedAtCut := cut.vmsStarted()
	cut.o.waitFor(t, 3*time.Minute, "the cut host's running job completing while cut off (its VM gone, ok)", func() bool {
		return len(logLines(cut.o.log, jobDone)) > 0
	})
	if n := cut.vmsStarted(); n != bootedAtCut {
		t.Errorf("the cut host started %d VM(s) while cut off from NATS; want none", n-bootedAtCut)
	}
	run(t, "ip", append([]string{"netns", "exec", cut.ns.name, "iptables", "-D", "INPUT"}, drop...)...)
	mendAt := time.Now()
	cut.o.waitFor(t, 2*time.Minute, "the cut host rejoining (fireactions_fleet_reachable 1), no restart", func() bool { return fleetReachable(cut.ns) == "1" })
	t.Logf("FIGURE fleet cut: the cut host rejoined %s after the cut ended, same process", time.Since(mendAt).Round(time.Second))

	done := live[0].o.waitJobsDone(t, 6*time.Minute, "the burst's jobs", r.gitea, "ci/burst", burstJobs)
	for _, j := range done {
		if j.Conclusion != "success" {
			t.Errorf("job %d ended %q", j.ID, j.Conclusion)
		}
	}
	t.Logf("FIGURE fleet kill: the burst completed %s after a host was killed (claim TTL %s)", time.Since(killedAt).Round(time.Second), ttl)
	var per []int
	started, failed := 0, 0
	for _, h := range hosts {
		per = append(per, h.vmsStarted())
		started += h.vmsStarted()
		failed += h.vmsFailed()
	}
	for _, h := range live {
		h.o.terminate(t)
	}
	for _, h := range live {
		h.o.waitExit(t, 3*time.Minute)
	}

	// The same burst without the fleet section.
	alone := startBurstHosts(t, r, "f3a", "f3ab", 163, "fireactions-alone", nil)
	pushBurst(t, r, "alone", "fireactions-alone")
	doneAlone := alone[0].o.waitJobsDone(t, 8*time.Minute, "the burst's jobs without the fleet", r.gitea, "ci/alone", burstJobs)
	for _, j := range doneAlone {
		if j.Conclusion != "success" {
			t.Errorf("without the fleet: job %d ended %q", j.ID, j.Conclusion)
		}
	}
	for _, h := range alone {
		h.o.terminate(t)
	}
	var perAlone []int
	startedAlone, failedAlone := 0, 0
	for _, h := range alone {
		h.o.waitExit(t, 3*time.Minute)
		perAlone = append(perAlone, h.vmsStarted())
		startedAlone += h.vmsStarted()
		failedAlone += h.vmsFailed()
	}
	t.Logf("FIGURE fleet burst: %d jobs, 3 hosts of max %d, min_idle 0: with the fleet %d VMs started %v (%.2f per job; a host killed after booting %d, %d failed to boot), without %d %v (%.2f per job, %d failed to boot)",
		burstJobs, burstMax, started, per, float64(started)/burstJobs, deadBooted, failed, startedAlone, perAlone, float64(startedAlone)/burstJobs, failedAlone)
	if started < burstJobs || started > burstJobs+deadBooted+failed {
		t.Errorf("with the fleet %d VMs started %v for %d jobs; want %d + at most the %d the killed host booted and the %d that failed", started, per, burstJobs, burstJobs, deadBooted, failed)
	}
	if startedAlone-failedAlone <= burstJobs {
		t.Errorf("without the fleet %d VMs started for %d jobs; three hosts each seeing every job should start more", startedAlone, burstJobs)
	}
}
