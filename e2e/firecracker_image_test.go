//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"
)

// TestFirecrackerImageRootAndHungVMM runs an image-rooted pool with the
// Firecracker driver, jailed, through the double, which gives each drive
// the serial real Firecracker gives it (made from the backing file, not
// the drive id): the guest agent finds its image and writable disks by
// the serials the driver names on the kernel command line, switches root
// and runs a job. Then the same host runs with a VMM that never answers
// InstanceStart (the double's FCDOUBLE_HANG): each VM fails its start
// within vmm.firecracker.api_call_timeout, its VMM killed and the failure
// counted, no VM stays in Creating, and a drain that finds a VM in
// Creating with its VMM hung ends within that bound, leaving nothing
// behind.
func TestFirecrackerImageRootAndHungVMM(t *testing.T) {
	rig := newGiteaImageRig(t, fmt.Sprintf("fafc%d", os.Getpid()%100000))
	ns, bin, work, gitea, state, cfgPath := rig.ns, rig.bin, rig.work, rig.gitea, rig.state, rig.cfgPath
	fc, jails, _, record := firecrackerDouble(t, work)
	imageRef := serveRegistry(t, ns) + "/e2e/runner:v1"
	pushImage(t, ns, imageRef, runnerImage(t, giteaRunner()))
	cfg := rig.config("fcimg", work, "fafc0", "10.204.0.0/24")
	cfg.DrainGrace = "2m"
	cfg.Metrics = &metricsConfig{Listen: "127.0.0.1:9464"}
	cfg.VMM = &vmmConfig{Driver: "firecracker", Firecracker: &firecrackerConfig{
		Binary: fc.Firecracker, JailerBinary: fc.Jailer, ChrootBaseDir: jails, UID: fcUID, GID: fcUID,
	}}
	p := rig.imagePool("fcimg", "fireactions-image", imageRef, "IfNotPresent")
	p.VM.VCPUs, p.VM.MemoryMiB = 1, 512
	cfg.Pools = []poolConfig{p}
	cfg.write(t, cfgPath)

	orch := startOrchestrator(t, ns, bin, cfgPath, state)
	var idleID string
	orch.waitFor(t, 5*time.Minute, "the image-rooted VM to be idle (its agent found its disks)", func() bool {
		for id, phase := range vmDirs(state) {
			if phase == "idle" {
				idleID = id
				return true
			}
		}
		return false
	})
	t.Run("the agent found its disks by Firecracker's serials", func(t *testing.T) {
		console, _ := os.ReadFile(filepath.Join(state, "vms", idleID, "console.log"))
		m := regexp.MustCompile(`root switched to the image \(erofs (/dev/vd[a-z]), writable (/dev/vd[a-z])\)`).FindSubmatch(console)
		if m == nil {
			t.Fatalf("vm %s's agent did not say it switched root; console:\n%s", idleID, console)
		}
		t.Logf("FIGURE vm %s: image %s, writable %s", idleID, m[1], m[2])
		var bootArgs string
		for _, r := range readAPIRecord(t, record) {
			if r.Path == "/boot-source" {
				var b struct {
					BootArgs string `json:"boot_args"`
				}
				json.Unmarshal([]byte(r.Body), &b)
				bootArgs = b.BootArgs
			}
		}
		for _, id := range []string{"fa-image", "fa-writable"} {
			if !regexp.MustCompile(`fireactions\.serial\.` + id + `=\d{1,20}( |$)`).MatchString(bootArgs) {
				t.Errorf("boot_args %q name no serial for drive %s", bootArgs, id)
			}
		}
	})

	gitea.api(http.MethodPost, "/api/v1/user/repos", map[string]any{"name": "iso", "default_branch": "main"}, nil)
	tree := filepath.Join(work, "repo")
	writeFile(t, filepath.Join(tree, ".gitea/workflows/iso.yml"), 0o644, isolationWorkflow)
	gitea.push(tree, "ci/iso", "first")
	orch.waitFor(t, 6*time.Minute, "the run to complete", func() bool { return completedRuns(gitea, "ci/iso") == 1 })
	for _, j := range gitea.jobs("ci/iso") {
		logText := gitea.raw(fmt.Sprintf("/api/v1/repos/ci/iso/actions/jobs/%d/logs", j.ID))
		if j.Conclusion != "success" || !regexp.MustCompile(`(?m)Z root-is-overlay\s*$`).MatchString(logText) {
			t.Errorf("job %d concluded %s, or its root is not the image's overlay:\n%s", j.ID, j.Conclusion, logText)
		}
	}
	orch.terminate(t)
	orch.waitExit(t, 2*time.Minute)
	assertNothingLeft(t, ns, gitea, state, "fafc0")

	// The same host, its VMMs hung on InstanceStart.
	t.Setenv("FCDOUBLE_HANG", "PUT /actions")
	hungDir := filepath.Join(work, "hung")
	os.MkdirAll(hungDir, 0o700)
	hungCfg := filepath.Join(hungDir, "fireactions.yaml")
	cfg.VMM.Firecracker.APICallTimeout = "1s"
	cfg.write(t, hungCfg)
	orch = startOrchestrator(t, ns, bin, hungCfg, state)
	gone := regexp.MustCompile(`msg="vm gone".*ok=false.*PUT /actions: the VMM did not answer within 1s`)
	orch.waitFor(t, 3*time.Minute, "two VMs to fail their start on the hung VMM", func() bool {
		return len(logLines(orch.log, gone)) >= 2
	})
	resp, err := ns.httpClient().Get("http://127.0.0.1:9464/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	metrics := string(body)
	if m := regexp.MustCompile(`(?m)^fireactions_vms_failed_total\{pool="fcimg",reason="start"\} (\d+)$`).FindStringSubmatch(metrics); m == nil || m[1] == "0" || m[1] == "1" {
		t.Errorf("start failures not counted (want 2 or more): %s", grep(metrics, "vms_failed"))
	}
	// Drain while a VM is in Creating, its VMM hung on InstanceStart.
	orch.waitFor(t, 3*time.Minute, "a VM in creating with its VMM hung", func() bool {
		creating := false
		for _, phase := range vmDirs(state) {
			creating = creating || phase == "creating"
		}
		recs := readAPIRecord(t, record)
		last := recs[len(recs)-1]
		return creating && last.Path == "/actions" && last.Status == 0 && len(pidsWorkingIn(jails)) > 0
	})
	start := time.Now()
	orch.terminate(t)
	orch.waitExit(t, 30*time.Second)
	t.Logf("FIGURE drain with a VM in creating, its VMM hung (api_call_timeout 1s), took %s", time.Since(start).Round(time.Millisecond))
	assertNothingLeft(t, ns, gitea, state, "fafc0")
	if left, _ := filepath.Glob(filepath.Join(jails, "firecracker", "*")); len(left) != 0 {
		t.Errorf("jails left: %v", left)
	}
	if ps := pidsWorkingIn(jails); len(ps) != 0 {
		t.Errorf("processes left working in the jails: %v", ps)
	}
}
