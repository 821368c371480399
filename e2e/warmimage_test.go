//go:build e2e

package e2e

import (
	"fmt"
	"net/http"
	"path/filepath"
	"regexp"
	"testing"
	"time"
)

// warmImageWorkflow's two jobs run one after the other (two needs one),
// each in a VM restored from the image pool's template: each prints what
// must be its own (hostname, boot id, MAC, random bytes) and that its
// root is the image's overlay, fails if it finds a marker any job left on
// the root, then writes its own and reads it back. Job two runs after job one wrote its marker: it passes only if
// its restore's writable disk is not job one's (nor the template's).
const warmImageWorkflow = `on: [push]
jobs:
  one:
    runs-on: fireactions-wimg
    steps:
      - run: |` + warmImageProbe + `
        env:
          JOB: one
  two:
    needs: one
    runs-on: fireactions-wimg
    steps:
      - run: |` + warmImageProbe + `
        env:
          JOB: two
`

// warmImageProbe is the step both jobs run, indented for the block above.
const warmImageProbe = `
          echo "fireactions-vm=$(hostname) job=$JOB boot=$(cat /proc/sys/kernel/random/boot_id) mac=$(cat /sys/class/net/eth0/address) rand=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
          grep -q '^overlay / overlay' /proc/mounts && echo "root-is-overlay"
          for f in /fa-warm-*; do
            if [ -e "$f" ]; then echo "LEFTOVER $f from $(cat "$f")"; exit 1; fi
          done
          echo "$JOB-$(hostname)" > "/fa-warm-$JOB"
          echo "marker-read=$(cat "/fa-warm-$JOB")"`

// TestGiteaJobsRunInRestoredImageVMs: an image-rooted (vm.image) pool with
// warm starts builds its template from the image, then two Gitea jobs, one
// after the other, each run in a VM of their own restored from it (the
// orchestrator's log says so for both, and no VM booted cold), both
// succeeding: each restore has its own boot id, MAC and random bytes, and
// its own writable disk under the image (job two does not see the file
// job one wrote on /). The FIGURE lines are each restore's time (VMM
// start + identity) and then start → runner ready.
func TestGiteaJobsRunInRestoredImageVMs(t *testing.T) {
	r := newGiteaImageRig(t, "fawimg")
	gitea, work := r.gitea, r.work
	imageRef := serveRegistry(t, r.ns) + "/e2e/runner:warm"
	pushImage(t, r.ns, imageRef, runnerImage(t, giteaRunner()))

	cfg := r.config("wimg", work, "fawi0", "10.192.0.0/24")
	p := r.imagePool("wimg", "fireactions-wimg", imageRef, "IfNotPresent")
	p.MinIdle, p.Max, p.WarmStart = 0, 2, true
	p.VM.VCPUs, p.VM.MemoryMiB = 1, 512
	cfg.Pools = []poolConfig{p}
	o := r.start(cfg)
	o.waitFor(t, 4*time.Minute, "the image pool's template built", func() bool {
		return len(logLines(o.log, regexp.MustCompile(`warm start: template built`))) == 1
	})

	gitea.api(http.MethodPost, "/api/v1/user/repos", map[string]any{"name": "wimg", "default_branch": "main"}, nil)
	tree := filepath.Join(work, "repo")
	writeFile(t, filepath.Join(tree, ".gitea/workflows/wimg.yml"), 0o644, warmImageWorkflow)
	gitea.push(tree, "ci/wimg", "two jobs, one after the other, in restored image VMs")
	jobs := o.waitJobsDone(t, 6*time.Minute, "the two jobs done", gitea, "ci/wimg", 2)

	// Output lines, not the script's text echoed in the log.
	vmLine := regexp.MustCompile(`fireactions-vm=([0-9a-f]{12}) job=(one|two) boot=(\S+) mac=(\S+) rand=([0-9a-f]{32})`)
	readBack := regexp.MustCompile(`(?m)Z marker-read=(one|two)-([0-9a-f]{12})\s*$`)
	leftover := regexp.MustCompile(`LEFTOVER /\S+ from`)
	overlay := regexp.MustCompile(`(?m)Z root-is-overlay\s*$`)
	vms := map[string]string{}    // job name → the VM it ran in
	seen := map[string][]string{} // job name → its boot id, MAC, random bytes
	for _, j := range jobs {
		logs := gitea.raw(fmt.Sprintf("/api/v1/repos/ci/wimg/actions/jobs/%d/logs", j.ID))
		m := vmLine.FindStringSubmatch(logs)
		if m == nil {
			t.Errorf("job %d (%s): no VM line in its log:\n%s", j.ID, j.Conclusion, logs)
			continue
		}
		vms[m[2]], seen[m[2]] = m[1], m[3:6]
		if leftover.MatchString(logs) {
			t.Errorf("job %s in VM %s saw another VM's write on its root:\n%s", m[2], m[1], logs)
		}
		if rb := readBack.FindStringSubmatch(logs); rb == nil || rb[1] != m[2] || rb[2] != m[1] {
			t.Errorf("job %s in VM %s did not read back the marker it wrote on its root:\n%s", m[2], m[1], logs)
		}
		if !overlay.MatchString(logs) {
			t.Errorf("job %s in VM %s: its root is not the image's overlay:\n%s", m[2], m[1], logs)
		}
		if j.Conclusion != "success" {
			t.Errorf("job %s (%d) ended %q:\n%s", m[2], j.ID, j.Conclusion, logs)
		}
	}
	if len(vms) != 2 || vms["one"] == vms["two"] {
		t.Fatalf("jobs ran in VMs %v; want two, each its own", vms)
	}
	assertRestoredApart(t, o.log, "image", vms, seen)
	// A restore's two parts: the VMM started from the template (with the
	// runner's registration beside it) and the identity handed over,
	// then (from the handover) the runner ready.
	restoredIn := regexp.MustCompile(`vm restored from its pool's template.*vm=(\S+).*took=(\S+)`)
	for _, l := range logLines(o.log, restoredIn) {
		m := restoredIn.FindStringSubmatch(l)
		t.Logf("FIGURE image pool, restore (VMM start and registration, then identity): %s (vm %s)", m[2], m[1])
	}
	took := regexp.MustCompile(`vm ready.*pool=(\S+).*vm=(\S+).*took=(\S+) restored=(\S+)`)
	for _, l := range logLines(o.log, took) {
		m := took.FindStringSubmatch(l)
		t.Logf("FIGURE image pool, start → runner ready (restored %s): %s (vm %s)", m[4], m[3], m[2])
	}
	o.terminate(t)
	o.waitExit(t, 2*time.Minute)
	assertNothingLeft(t, r.ns, gitea, r.state, "fawi0")
}
