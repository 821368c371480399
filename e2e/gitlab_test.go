//go:build e2e

package e2e

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/internal/double/gitlabdouble"
)

const (
	glPort    = "8929" // the GitLab double, on every address of the namespace
	glAPIPort = "8931" // the orchestrator's API (webhooks), on 127.0.0.1
	glTag     = "fa-gl-e2e"
)

// glJobScript prints where and as whom the job ran, for the checks.
const glJobScript = `echo "fireactions-vm=$(hostname) user=$(id -un) dir=$(pwd)"`

// TestGitLabJobsRunInTheirOwnMicroVMs runs GitLab jobs for real in QEMU
// guests against the GitLab double (GitLab itself cannot run here): the
// orchestrator creates one runner per VM through the API, the guest's
// stand-in gitlab-runner takes exactly one job with the runner's own token
// and exits, and the VM powers off. A job with a tag no pool offers starts
// no VM. Then faults (lost and timed-out runner creations, 429s, 5xx on
// listings and removals) leave no runner behind, and SIGTERM during a
// running job lets it finish.
func TestGitLabJobsRunInTheirOwnMicroVMs(t *testing.T) {
	r := newGitLabRig(t, "fagl")
	gl, state, work, ns := r.gl, r.state, r.work, r.ns
	accessToken, hookSecret, apiToken := r.accessToken, "hook-"+randHex(t), "api-"+randHex(t)

	// Phase A's jobs wait before the orchestrator starts.
	served := []int64{
		gl.AddJob("acme/app", "tagged", []string{glTag}, glJobScript),
		gl.AddJob("acme/app", "two-tags", []string{glTag, "linux"}, glJobScript),
		gl.AddJob("acme/app", "untagged", nil, glJobScript),
	}
	gpu := gl.AddJob("acme/app", "gpu", []string{"gpu"}, glJobScript)

	writeFile(t, filepath.Join(work, "gitlab-hook"), 0o600, hookSecret+"\n")
	writeFile(t, filepath.Join(work, "api-tokens"), 0o600, apiToken+"\n")
	qemuBin, booted := capturingQEMU(t)
	cfg := r.config("gle2e", "fagl0", "10.204.0.0/24")
	cfg.VMM = &vmmConfig{QEMU: &qemuConfig{Binary: qemuBin}}
	cfg.DrainGrace = "3m"
	cfg.API.Listen, cfg.API.TokensFile = "127.0.0.1:"+glAPIPort, filepath.Join(work, "api-tokens")
	cfg.Forges[0].WebhookSecretFile = filepath.Join(work, "gitlab-hook")
	pool := r.pool("gl", []string{glTag, "linux"}, 2)
	pool.Runner = &runnerConfig{RunUntagged: true}
	cfg.Pools = []poolConfig{pool}

	started := time.Now()
	orch := r.start(cfg)
	hc := ns.httpClient()
	orch.waitFor(t, time.Minute, "the API", func() bool {
		resp, err := hc.Get("http://127.0.0.1:" + glAPIPort + "/healthz")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == 200
	})
	gl.SetHook("http://127.0.0.1:"+glAPIPort+"/webhooks/gitlab", hookSecret, hc)

	// Phase A: three jobs, each in its own VM; the gpu job starts none.
	orch.waitFor(t, 8*time.Minute, "the 3 served jobs to succeed", func() bool { return allStatus(gl, served, "success") })
	t.Logf("FIGURE 3 GitLab jobs (max 2 VMs at once) done %s after the orchestrator started", time.Since(started).Round(time.Second))
	orch.waitFor(t, 2*time.Minute, "their VMs and runners to be gone", func() bool {
		return len(vmDirs(state)) == 0 && len(gl.Runners()) == 0
	})
	checkJobsRanAlone(t, gl, served)
	if st := gl.Jobs()[gpu].Status; st != "pending" {
		t.Fatalf("the gpu job is %s", st)
	}
	if n := len(logLines(orch.log, regexp.MustCompile(`msg="vm booting"`))); n != len(served) {
		t.Fatalf("%d VMs started for %d servable jobs (the gpu job must start none)", n, len(served))
	}
	if len(logLines(orch.log, regexp.MustCompile(fmt.Sprintf(`no pool serves this job's labels.*job=%d\b`, gpu)))) != 1 {
		t.Fatal("the unservable gpu job was not reported once")
	}
	if code := postHook(t, hc, "wrong-"+hookSecret, gl.JobHook(gpu)); code != http.StatusUnauthorized {
		t.Fatalf("a webhook with a wrong X-Gitlab-Token got %d", code)
	}

	// Phase B: faults on every kind of call; jobs still run, and no
	// runner is left at GitLab.
	gl.Inject(gitlabdouble.Fault{Method: "POST", Path: "/user/runners", Status: 502, After: true, Times: 1})
	gl.Inject(gitlabdouble.Fault{Method: "POST", Path: "/user/runners", Delay: 35 * time.Second, After: true, Times: 1})
	gl.Inject(gitlabdouble.Fault{Method: "POST", Path: "/user/runners", Status: 429, Times: 2})
	gl.Inject(gitlabdouble.Fault{Method: "GET", Path: "/projects/2/jobs", Status: 503, Times: 3})
	gl.Inject(gitlabdouble.Fault{Method: "GET", Path: "/projects/2/runners", Status: 500, Times: 2})
	gl.Inject(gitlabdouble.Fault{Method: "DELETE", Path: "/runners/", Status: 500, Times: 3})
	faulted := []int64{
		gl.AddJob("acme/app", "after-faults-1", []string{glTag}, glJobScript),
		gl.AddJob("acme/app", "after-faults-2", []string{"linux"}, glJobScript),
	}
	orch.waitFor(t, 8*time.Minute, "the jobs to succeed through the faults", func() bool { return allStatus(gl, faulted, "success") })
	orch.waitFor(t, 2*time.Minute, "no VM and no runner left after the faults", func() bool {
		return len(vmDirs(state)) == 0 && len(gl.Runners()) == 0
	})
	checkJobsRanAlone(t, gl, faulted)
	created := 0
	for _, c := range gl.Calls() {
		if c == "POST /api/v4/user/runners" {
			created++
		}
	}
	t.Logf("runner creations attempted in all: %d (2 lost to faults, 2 refused with 429)", created)
	if len(logLines(orch.log, regexp.MustCompile(`removed runner left by a failed creation`))) == 0 {
		t.Error("the runner created after a timed-out request was not removed by the driver")
	}

	// Phase H: a hostile job. It runs as the runner's user, so it reads
	// the runner's glrt- token from config.toml (the positive control: it
	// must find the very token GitLab issued) and asks GitLab for another
	// job with it while a decoy job is pending. The orchestrator deletes
	// the runner at GitLab as soon as the guest reports the job started,
	// so the token is refused (403) and the decoy goes to a VM of its own.
	hostile := gl.AddJob("acme/app", "hostile", []string{glTag}, glHostileScript)
	decoy := gl.AddJob("acme/app", "decoy", []string{glTag}, glJobScript)
	orch.waitFor(t, 8*time.Minute, "the hostile and the decoy job to succeed", func() bool { return allStatus(gl, []int64{hostile, decoy}, "success") })
	checkHostileJob(t, gl, hostile, decoy)
	checkJobsRanAlone(t, gl, []int64{hostile, decoy})
	orch.waitFor(t, 2*time.Minute, "no VM and no runner left after the hostile job", func() bool {
		return len(vmDirs(state)) == 0 && len(gl.Runners()) == 0
	})

	// Phase C: SIGTERM while a job runs: the busy VM is waited for.
	slow := gl.AddJob("acme/app", "slow", []string{glTag}, glJobScript, "sleep 15", `echo "slow job done"`)
	orch.waitFor(t, 4*time.Minute, "the slow job's VM to be busy", func() bool { return countPhase(state, "busy") == 1 })
	checkSecretsOutOfReach(t, state, booted, accessToken, gl)
	orch.terminate(t)
	orch.waitExit(t, 3*time.Minute)
	if j := gl.Jobs()[slow]; j.Status != "success" || !strings.Contains(string(j.Trace), "slow job done") {
		t.Fatalf("the job running at SIGTERM ended %s:\n%s", j.Status, j.Trace)
	}

	// Nothing left: no runner at GitLab, no QEMU, TAP or VM directory,
	// and no token in the orchestrator's log.
	if rs := gl.Runners(); len(rs) != 0 {
		t.Errorf("GitLab lists %d runners after the drain: %+v", len(rs), rs)
	}
	for _, p := range qemuProcesses() {
		if strings.Contains(p, state) { // other tests may run VMs on this machine
			t.Errorf("QEMU process left: %s", p)
		}
	}
	for _, l := range ns.links(t) {
		if strings.HasPrefix(l, "fa") && l != "fagl0" {
			t.Errorf("TAP left: %s", l)
		}
	}
	if left := vmDirs(state); len(left) != 0 {
		t.Errorf("VM directories left: %v", left)
	}
	logText, _ := os.ReadFile(orch.log)
	consoles, _ := filepath.Glob(filepath.Join(state, "logs", "*.log"))
	for _, tok := range append(gl.IssuedTokens(), accessToken) {
		if bytes.Contains(logText, []byte(tok)) {
			t.Errorf("the orchestrator log holds a token (%.10s…)", tok)
		}
		for _, c := range consoles {
			if b, _ := os.ReadFile(c); bytes.Contains(b, []byte(tok)) {
				t.Errorf("kept console log %s holds a token (%.10s…)", c, tok)
			}
		}
	}
	accepted, pending := 0, 0
	for _, d := range gl.Deliveries() {
		if d.Code == http.StatusNoContent {
			accepted++
		}
		if d.Status == "pending" {
			pending++
		}
	}
	hookLines := logLines(orch.log, regexp.MustCompile(`gitlab webhook: pending job`))
	t.Logf("webhooks: %d delivered, %d accepted, %d pending-job deliveries, %d logged by the driver", len(gl.Deliveries()), accepted, pending, len(hookLines))
	if pending < 3 || len(hookLines) < 3 || accepted == 0 {
		t.Errorf("the Job Hook webhooks did not reach the driver")
	}
	var ready []string
	for _, l := range logLines(orch.log, regexp.MustCompile(`event=runner-ready`)) {
		if m := regexp.MustCompile(`guest_uptime=(\S+)`).FindStringSubmatch(l); m != nil {
			ready = append(ready, m[1])
		}
	}
	t.Logf("FIGURE guest kernel start -> gitlab-runner started (guest CLOCK_BOOTTIME), %d VMs: %v", len(ready), ready)
}

// glHostileScript is a job that tries to take another job with its
// runner's token, as a job with the runner's uid could: it looks for the
// token in config.toml (gitlab-runner's masking does not stop sed), in
// every process's environment and command line, and asks GitLab for a
// job with whatever it found. Positive controls: the config directory the
// agent wrote is there, and the /proc scan finds the job's own token in
// its environment. (The pattern is written gl[r]t- so that the script's
// own command line does not match it.)
const glHostileScript = `echo "fireactions-vm=$(hostname) user=$(id -un) dir=$(pwd)"
cfg=$HOME/.gitlab-runner/config.toml
[ -d "$HOME/.gitlab-runner" ] && echo "hostile: config dir present"
[ -e "$cfg" ] && echo "hostile: config.toml present" || echo "hostile: config.toml absent"
tok=$(sed -n 's/^ *token = "\(gl[r]t-[^"]*\)".*/\1/p' "$cfg" 2>/dev/null)
procs=0; jobtok=0
for f in /proc/[0-9]*/environ /proc/[0-9]*/cmdline; do
  v=$(cat "$f" 2>/dev/null | tr '\0' '\n')
  if [ -z "$tok" ]; then
    t=$(echo "$v" | grep -o 'gl[r]t-[A-Za-z0-9_-]*' | head -1)
    [ -n "$t" ] && tok=$t && echo "hostile: token found in $f"
  fi
  echo "$v" | grep -q 'gl[r]t-' && procs=$((procs+1))
  echo "$v" | grep -qF "$CI_JOB_TOKEN" && jobtok=$((jobtok+1))
done
echo "hostile: runner token in $procs /proc files, job token in $jobtok"
[ -n "$tok" ] && echo "hostile: runner token found: yes sha256=$(printf %s "$tok" | sha256sum | cut -c1-16)" || echo "hostile: runner token found: no"
url=http://$(ip route | sed -n 's/^default via \([0-9.]*\).*/\1/p'):` + glPort + `
out=$(wget -S -q -O /tmp/stolen --header 'Content-Type: application/json' --post-data "{\"token\":\"$tok\",\"info\":{}}" "$url/api/v4/jobs/request" 2>&1)
echo "hostile: jobs/request answered: $(echo "$out" | grep -o 'HTTP/1.1 [0-9][0-9][0-9]' | head -1)"
echo "hostile: stolen job: $(grep -o '"id":[0-9]*' /tmp/stolen 2>/dev/null | head -1)"`

// checkHostileJob checks the hostile job found no runner token anywhere
// it looked (with its positive controls), GitLab gave it no job, the
// decoy ran on a runner of its own, and the hostile job's runner was
// deleted at GitLab while the job ran (the job still finished).
func checkHostileJob(t *testing.T, gl *gitlabdouble.Server, hostile, decoy int64) {
	t.Helper()
	jobs := gl.Jobs()
	h := jobs[hostile]
	trace := string(h.Trace)
	t.Logf("hostile job's log:\n%s", trace)
	if !strings.Contains(trace, "hostile: config dir present") {
		t.Fatalf("positive control: the job does not see ~/.gitlab-runner, where the agent wrote config.toml: the probe looks in the wrong place")
	}
	if !strings.Contains(trace, "hostile: config.toml absent") {
		t.Errorf("config.toml is still there when the job runs")
	}
	pm := regexp.MustCompile(`hostile: runner token in (\d+) /proc files, job token in (\d+)`).FindStringSubmatch(trace)
	switch {
	case pm == nil:
		t.Fatalf("the hostile job did not scan /proc:\n%s", trace)
	case pm[2] == "0":
		t.Fatalf("positive control: the /proc scan did not even see the job's own token: the probe is broken")
	case pm[1] != "0":
		t.Errorf("a runner token is in %s process environments or command lines", pm[1])
	}
	if m := regexp.MustCompile(`hostile: runner token found: yes sha256=([0-9a-f]{16})`).FindStringSubmatch(trace); m != nil {
		for _, tok := range gl.IssuedTokens() {
			if sum := sha256.Sum256([]byte(tok)); hex.EncodeToString(sum[:8]) == m[1] {
				t.Errorf("the hostile job read an issued runner token")
			}
		}
	} else if !strings.Contains(trace, "hostile: runner token found: no") {
		t.Fatalf("the hostile job did not say whether it found a token:\n%s", trace)
	}
	if !strings.Contains(trace, "hostile: jobs/request answered: HTTP/1.1 403") {
		t.Errorf("GitLab did not refuse the hostile job's request for a job (want 403)")
	}
	if strings.Contains(trace, `hostile: stolen job: "id"`) {
		t.Errorf("the hostile job took another job")
	}
	d := jobs[decoy]
	if d.RunnerID == h.RunnerID {
		t.Errorf("the decoy job ran on the hostile job's runner %d", h.RunnerID)
	}
	at, ok := gl.Deleted()[h.RunnerID]
	switch {
	case !ok:
		t.Errorf("the hostile job's runner %d was never deleted at GitLab", h.RunnerID)
	case !at.Before(h.EndedAt):
		t.Errorf("the hostile job's runner was deleted at GitLab only after its job ended")
	default:
		t.Logf("FIGURE the hostile job's runner token stayed valid %s after GitLab handed it the job (deleted at GitLab on the guest's job-started report; the job ended %s later, with its job token)",
			at.Sub(h.StartedAt).Round(time.Millisecond), h.EndedAt.Sub(at).Round(time.Millisecond))
	}
}

// buildStandinRunner builds the stand-in gitlab-runner, static.
func buildStandinRunner(t *testing.T, dir string) string {
	t.Helper()
	out := filepath.Join(dir, "gitlab-runner")
	cmd := exec.Command("go", "build", "-trimpath", "-o", out, "../internal/double/gitlabdouble/cmd/gitlab-runner")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the stand-in gitlab-runner: %v\n%s", err, b)
	}
	return out
}

func randHex(t *testing.T) string {
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b[:])
}

func allStatus(gl *gitlabdouble.Server, ids []int64, status string) bool {
	jobs := gl.Jobs()
	for _, id := range ids {
		if jobs[id].Status != status {
			return false
		}
	}
	return true
}

// checkJobsRanAlone checks each job ran in a VM of its own, as the
// unprivileged runner user, under the runner's home, on a runner that
// took exactly that one job.
func checkJobsRanAlone(t *testing.T, gl *gitlabdouble.Server, ids []int64) {
	t.Helper()
	vmOf := regexp.MustCompile(`fireactions-vm=([0-9a-f]+) user=(\S+) dir=(\S+)`)
	jobs := gl.Jobs()
	seenVM, seenRunner := map[string]int64{}, map[int64]int64{}
	for _, id := range ids {
		j := jobs[id]
		m := vmOf.FindStringSubmatch(string(j.Trace))
		if m == nil {
			t.Fatalf("job %d log has no VM id:\n%s", id, j.Trace)
		}
		if prev, dup := seenVM[m[1]]; dup {
			t.Errorf("jobs %d and %d both ran in VM %s", prev, id, m[1])
		}
		if prev, dup := seenRunner[j.RunnerID]; dup {
			t.Errorf("jobs %d and %d both ran on runner %d", prev, id, j.RunnerID)
		}
		seenVM[m[1]], seenRunner[j.RunnerID] = id, id
		if m[2] != "runner" || !strings.HasPrefix(m[3], "/home/runner/builds/") {
			t.Errorf("job %d ran as %s in %s; want user runner under /home/runner/builds", id, m[2], m[3])
		}
	}
}

// checkSecretsOutOfReach checks the scope-wide token is in no VM's
// initramfs, as text or base64 (the agent config carries runner files
// base64-encoded), while each VM's own runner token is (the positive
// control), and no token is on a QEMU command line.
func checkSecretsOutOfReach(t *testing.T, state, booted, accessToken string, gl *gitlabdouble.Server) {
	t.Helper()
	// A busy VM's runner is deleted at GitLab once its job started: its
	// token is among those issued, no longer among the runners.
	var own []string
	for _, tok := range gl.IssuedTokens() {
		if strings.HasPrefix(tok, "glrt-") {
			own = append(own, tok)
		}
	}
	for id, phase := range vmDirs(state) {
		if phase != "booting" && phase != "idle" && phase != "busy" {
			continue // being created (no initramfs yet) or torn down (no runner)
		}
		visible := guestVisible(t, capturedInitramfs(booted, id))
		if !bytes.Contains(visible, []byte(`"vm_id"`)) {
			t.Fatalf("vm %s: its own config is not visible in its initramfs: the search is broken", id)
		}
		found := false
		for _, tok := range own {
			found = found || holdsSecret(visible, tok)
		}
		if !found {
			t.Fatalf("vm %s: its runner's own token is not found in its initramfs: the search is broken", id)
		}
		if holdsSecret(visible, accessToken) {
			t.Errorf("vm %s: the scope-wide access token is in its initramfs", id)
		}
	}
	for _, p := range qemuProcesses() {
		if strings.Contains(p, accessToken) || strings.Contains(p, "glrt-") {
			t.Errorf("a token is on a QEMU command line: %s", p)
		}
	}
}

// holdsSecret reports whether b holds secret as text or inside base64 at
// any alignment (the stable middle of its encoding).
func holdsSecret(b []byte, secret string) bool {
	if bytes.Contains(b, []byte(secret)) {
		return true
	}
	for pad := 0; pad < 3; pad++ {
		enc := base64.StdEncoding.EncodeToString(append(make([]byte, pad), secret...))
		// Skip the characters the padding touches and the last group,
		// which depends on what follows.
		core := enc[(pad*4+2)/3+1 : len(enc)-4]
		if len(core) >= 16 && bytes.Contains(b, []byte(core)) {
			return true
		}
	}
	return false
}

func postHook(t *testing.T, hc *http.Client, token string, body []byte) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, "http://127.0.0.1:"+glAPIPort+"/webhooks/gitlab", bytes.NewReader(body))
	req.Header.Set("X-Gitlab-Event", "Job Hook")
	req.Header.Set("X-Gitlab-Token", token)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("post webhook: %v", err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
