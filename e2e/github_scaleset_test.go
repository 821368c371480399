//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/internal/double/githubdouble"
)

const (
	ssPort    = "8961" // the GitHub double
	ssAPIPort = "8963" // the orchestrator's API
	ssAppID   = 31338
	ssGateway = "10.248.0.1"
	ssLabel   = "fa-ss-e2e"
)

// TestGitHubScaleSetJobsRunInVMs runs GitHub jobs in QEMU guests with the
// pool's demand from its own runner scale set (no webhooks, no polling):
// the orchestrator, through github.com/actions/scaleset's client, creates
// the scale set <pool>-<host id>, holds a message session, and starts a
// VM per job GitHub (the double) assigns to it, each with a JIT runner of
// the scale set. Then the scale-set service fails calls (5xx), loses
// answers after acting and expires the session's token: every job still
// runs, once. After the drain no runner and no session is left, and the
// scale set stays for the next start.
func TestGitHubScaleSetJobsRunInVMs(t *testing.T) {
	r := newGitHubRig(t, "fass")
	d := githubdouble.New(githubdouble.Options{
		Spec: r.spec, Prefix: "/api/v3", AppID: ssAppID, AppKey: &r.key.PublicKey,
		RunnerURL: "http://" + ssGateway + ":" + ssPort + "/api/v3", Seed: 43,
		MessageWait: 5 * time.Second, SessionIdle: time.Minute,
	})
	t.Cleanup(d.Close)
	d.AddInstallation("Organization", "acme")
	r.serve(d, ssPort)

	cfg := r.config("sse2e", "fass0", "10.248.0.0/24", ssPort, ssAPIPort, ssAppID, "2s")
	cfg.Forges[0].URL += "/api/v3"
	cfg.DrainGrace = "3m"
	p := r.pool("ss", []string{ssLabel}, 2)
	p.Demand = "scaleset"
	cfg.Pools = []poolConfig{p}
	orch := r.start(cfg)
	orch.waitFor(t, 2*time.Minute, "the scale set's session", func() bool {
		sets := d.ScaleSets()
		return len(sets) == 1 && sets[0].Session
	})
	if s := d.ScaleSets()[0]; s.Name != "ss-sse2e" || s.MaxCapacity != 2 && s.MaxCapacity != 0 {
		t.Fatalf("scale set %+v: want ss-sse2e of capacity 2", s)
	}

	served := []githubdouble.Job{
		d.QueueJob("acme/widgets", "self-hosted", ssLabel),
		d.QueueJob("acme/widgets", ssLabel),
		d.QueueJob("acme/widgets", "self-hosted", ssLabel),
	}
	orch.waitFor(t, 8*time.Minute, "the 3 jobs to complete", func() bool { return ghCompleted(d, served) })
	orch.waitFor(t, 2*time.Minute, "their VMs and runners to be gone", func() bool {
		return len(vmDirs(r.state)) == 0 && len(d.Runners()) == 0
	})

	d.FailScaleSetCalls(3)
	d.LoseScaleSetAnswers(2)
	d.ExpireMessageTokens()
	faulted := []githubdouble.Job{
		d.QueueJob("acme/widgets", ssLabel),
		d.QueueJob("acme/widgets", "self-hosted", ssLabel),
		d.QueueJob("acme/widgets", ssLabel),
	}
	orch.waitFor(t, 10*time.Minute, "the jobs to complete through the faults", func() bool { return ghCompleted(d, faulted) })
	orch.waitFor(t, 3*time.Minute, "no VM and no runner left after the faults", func() bool {
		return len(vmDirs(r.state)) == 0 && len(d.Runners()) == 0
	})
	if f := d.ScaleSetFaults(); f["500"] != 3 || f["lost"] != 2 {
		t.Fatalf("faults served %v: want 3 x 500 and 2 lost", f)
	}
	all := append(append([]githubdouble.Job(nil), served...), faulted...)
	checkGitHubReports(t, d, all, r.keyPEM, r.hookSecret)
	for _, j := range all {
		if d.JobScaleSet(j.ID) != d.ScaleSets()[0].ID {
			t.Errorf("job %d was not assigned to the scale set", j.ID)
		}
	}
	if n := len(logLines(orch.log, regexp.MustCompile(`msg="vm booting"`))); n != len(all) {
		t.Errorf("%d VMs started for %d jobs", n, len(all))
	}

	orch.terminate(t)
	orch.waitExit(t, 2*time.Minute)
	if rs := d.Runners(); len(rs) != 0 {
		t.Errorf("the double lists %d runners after the drain: %+v", len(rs), rs)
	}
	sets := d.ScaleSets()
	if len(sets) != 1 {
		t.Fatalf("scale sets after the drain: %+v (a restart must keep it)", sets)
	}
	if sets[0].Session {
		t.Error("the scale set's session is still held after the drain")
	}
	for _, v := range d.Violations() {
		t.Errorf("GitHub's description violated: %s", v)
	}
	var calls []string
	for op, n := range d.Calls() {
		if strings.HasPrefix(op, "scaleset ") {
			calls = append(calls, fmt.Sprintf("%s=%d", op, n))
		}
	}
	t.Logf("FIGURE scale-set service calls for %d jobs: %v", len(all), calls)
}

// TestGitHubScaleSetTwoHosts runs two orchestrators (hosts h1 and h2,
// each its own bridge and state, one pool each with the same labels)
// against one GitHub double, each holding its own scale set: GitHub's
// assignment (the double: one scale set with room per job) splits the
// jobs, VMs started across both hosts equal jobs run, no job ran twice,
// both hosts ran some, and after both drains no runner and no session is
// left.
func TestGitHubScaleSetTwoHosts(t *testing.T) {
	r := newGitHubRig(t, "fast")
	d := githubdouble.New(githubdouble.Options{
		Spec: r.spec, Prefix: "/api/v3", AppID: ssAppID, AppKey: &r.key.PublicKey,
		RunnerURL: "http://10.243.0.1:" + ssPort + "/api/v3", Seed: 44,
		// h2's guests reach the double at their own gateway.
		RunnerURLs:  map[string]string{"fa-h2-": "http://10.244.0.1:" + ssPort + "/api/v3"},
		MessageWait: 5 * time.Second, SessionIdle: time.Minute,
	})
	t.Cleanup(d.Close)
	d.AddInstallation("Organization", "acme")
	r.serve(d, ssPort)

	hostCfg := func(host, bridge, cidr, apiPort, state string) *orchConfig {
		cfg := r.config(host, bridge, cidr, ssPort, apiPort, ssAppID, "2s")
		cfg.Forges[0].URL += "/api/v3"
		cfg.StateDir = state
		p := r.pool("ss", []string{ssLabel}, 2)
		p.Demand = "scaleset"
		cfg.Pools = []poolConfig{p}
		return cfg
	}
	state2 := r.shortStateDir("fast2")
	cfg1 := hostCfg("h1", "fast0", "10.243.0.0/24", ssAPIPort, r.state)
	cfg2 := hostCfg("h2", "fast1", "10.244.0.0/24", "8964", state2)
	cfg2.API.Socket = filepath.Join(r.work, "api2.sock")
	orch1 := r.start(cfg1)
	dir2 := filepath.Join(r.work, "h2")
	if err := os.MkdirAll(dir2, 0o700); err != nil {
		t.Fatal(err)
	}
	cfg2.write(t, filepath.Join(dir2, "fireactions.yaml"))
	orch2 := startOrchestrator(t, r.ns, r.bin, filepath.Join(dir2, "fireactions.yaml"), state2)
	orch1.waitFor(t, 2*time.Minute, "both scale sets' sessions", func() bool {
		n := 0
		for _, s := range d.ScaleSets() {
			if s.Session && s.MaxCapacity == 2 {
				n++
			}
		}
		return n == 2
	})

	var jobs []githubdouble.Job
	for range 6 {
		jobs = append(jobs, d.QueueJob("acme/widgets", "self-hosted", ssLabel))
	}
	orch1.waitFor(t, 10*time.Minute, "the 6 jobs to complete", func() bool { return ghCompleted(d, jobs) })
	orch1.waitFor(t, 3*time.Minute, "no VM and no runner left", func() bool {
		return len(vmDirs(r.state)) == 0 && len(vmDirs(state2)) == 0 && len(d.Runners()) == 0
	})
	checkGitHubReports(t, d, jobs, r.keyPEM, r.hookSecret)
	booted := regexp.MustCompile(`msg="vm booting"`)
	n1, n2 := len(logLines(orch1.log, booted)), len(logLines(orch2.log, booted))
	if n1+n2 != len(jobs) {
		t.Errorf("VMs started %d (h1) + %d (h2) for %d jobs", n1, n2, len(jobs))
		story := regexp.MustCompile(`vm booting|event=(runner-ready|job-started|runner-exited)|idle|removed`)
		for i, log := range []string{orch1.log, orch2.log} {
			for _, l := range logLines(log, story) {
				t.Logf("h%d: %s", i+1, l)
			}
		}
	}
	perSet := map[int64]int{}
	for _, j := range jobs {
		perSet[d.JobScaleSet(j.ID)]++
	}
	if len(perSet) != 2 || n1 == 0 || n2 == 0 {
		t.Errorf("jobs per scale set %v, VMs h1 %d h2 %d: want both hosts to run some", perSet, n1, n2)
	}
	t.Logf("FIGURE two hosts: jobs per scale set %v; VMs h1 %d, h2 %d", perSet, n1, n2)

	orch1.terminate(t)
	orch2.terminate(t)
	orch1.waitExit(t, 2*time.Minute)
	orch2.waitExit(t, 2*time.Minute)
	if rs := d.Runners(); len(rs) != 0 {
		t.Errorf("runners left after the drains: %+v", rs)
	}
	for _, s := range d.ScaleSets() {
		if s.Session {
			t.Errorf("scale set %s still has a session after the drains", s.Name)
		}
	}
	for _, v := range d.Violations() {
		t.Errorf("GitHub's description violated: %s", v)
	}
}

// TestGitHubScaleSetPauseAndDelete drives a scale set's capacity and its
// deletion through the CLI, no guest needed: pausing the pool makes its
// scale set report capacity 0, so GitHub (the double) assigns it no job
// and no VM starts; `fireactions github delete-scaleset` deletes the
// scale set at GitHub, and after it, even resumed, the pool starts no VM
// for the job still queued.
func TestGitHubScaleSetPauseAndDelete(t *testing.T) {
	const wait = 2 * time.Second // the double's long poll
	r := newGitHubRig(t, "fasp")
	d := githubdouble.New(githubdouble.Options{
		Spec: r.spec, Prefix: "/api/v3", AppID: ssAppID, AppKey: &r.key.PublicKey,
		RunnerURL: "http://10.249.0.1:" + ssPort + "/api/v3", Seed: 45,
		MessageWait: wait, SessionIdle: time.Minute,
	})
	t.Cleanup(d.Close)
	d.AddInstallation("Organization", "acme")
	r.serve(d, ssPort)

	cfg := r.config("spe2e", "fasp0", "10.249.0.0/24", ssPort, ssAPIPort, ssAppID, "2s")
	cfg.Forges[0].URL += "/api/v3"
	p := r.pool("sp", []string{ssLabel}, 2)
	p.Demand = "scaleset"
	cfg.Pools = []poolConfig{p}
	orch := r.start(cfg)
	cli := func(args ...string) string {
		return run(t, filepath.Join(r.bin, "fireactions"), append(args, "--socket", cfg.API.Socket)...)
	}
	capacity := func(n int) func() bool {
		return func() bool { s := d.ScaleSets(); return len(s) == 1 && s[0].Session && s[0].MaxCapacity == n }
	}
	orch.waitFor(t, 2*time.Minute, "the scale set's session at capacity 2", capacity(2))

	cli("pools", "pause", "sp")
	orch.waitFor(t, time.Minute, "the scale set's capacity 0", capacity(0))
	job := d.QueueJob("acme/widgets", "self-hosted", ssLabel)
	time.Sleep(3 * wait) // polls at capacity 0
	if id := d.JobScaleSet(job.ID); id != 0 {
		t.Fatalf("job %d assigned to scale set %d while its capacity was 0", job.ID, id)
	}

	out := cli("github", "delete-scaleset", "sp")
	if !strings.Contains(out, "scale set deleted") {
		t.Fatalf("delete-scaleset said %q", out)
	}
	orch.waitFor(t, time.Minute, "the scale set gone at GitHub", func() bool { return len(d.ScaleSets()) == 0 })
	cli("pools", "resume", "sp")
	time.Sleep(3 * wait)
	if n := len(logLines(orch.log, regexp.MustCompile(`msg="vm booting"`))); n != 0 {
		t.Fatalf("%d VMs started for a pool paused, then without its scale set", n)
	}
	if sets := d.ScaleSets(); len(sets) != 0 {
		t.Fatalf("scale sets after delete-scaleset and resume: %+v", sets)
	}
	if id := d.JobScaleSet(job.ID); id != 0 {
		t.Fatalf("job %d assigned to scale set %d", job.ID, id)
	}

	orch.terminate(t)
	orch.waitExit(t, 2*time.Minute)
	if rs := d.Runners(); len(rs) != 0 {
		t.Errorf("runners left after the drain: %+v", rs)
	}
	for _, v := range d.Violations() {
		t.Errorf("GitHub's description violated: %s", v)
	}
}
