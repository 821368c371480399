//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/guestroot"
	"github.com/nixos-fireactions/nixos-fireactions/internal/double/gitlabdouble"
)

// TestGitLabJobWhoseRunnerDiesIsCancelledAtOnce: a job that kills its
// gitlab-runner (the stand-in, in a real QEMU guest) is cancelled at the
// GitLab double within seconds of the runner's death (GitLab's own
// clean-up would take an hour or more), by the job GitLab listed for the
// VM's runner; the next job then runs in a VM of its own.
func TestGitLabJobWhoseRunnerDiesIsCancelledAtOnce(t *testing.T) {
	requireRoot(t)
	kernel, modules := hostKernel(t)
	bin := buildBinaries(t)
	work := t.TempDir()
	standin := buildStandinRunner(t, work)
	root := filepath.Join(work, "root.cpio.gz")
	if err := guestroot.Build(context.Background(), guestroot.DefaultSpec(standin, "/usr/bin/gitlab-runner"), root); err != nil {
		t.Fatal(err)
	}
	ns := newNetns(t, fmt.Sprintf("glf%d", os.Getpid()%100000))

	accessToken := "glpat-" + randHex(t)
	gl := gitlabdouble.New(accessToken)
	t.Cleanup(gl.Close)
	gl.AddProject("acme/app")
	ln, err := ns.listen("tcp", "0.0.0.0:"+glPort)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: gl.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	// The job's shell is the stand-in's child: it kills its runner.
	killer := gl.AddJob("acme/app", "kills-its-runner", []string{glTag}, `echo "about to kill my runner"`, `kill -9 $PPID`, `sleep 300`)

	writeFile(t, filepath.Join(work, "gitlab-token"), 0o600, accessToken+"\n")
	state, err := os.MkdirTemp("", "glf")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(state) })
	cfgPath := filepath.Join(work, "fireactions.yaml")
	writeFile(t, cfgPath, 0o600, fmt.Sprintf(`host_id: glfail
state_dir: %[1]s
log: {level: debug}
drain_grace: 1m
api: {socket: %[2]s/api.sock}
metrics: {listen: ""}
network:
  bridge: faglf0
  cidr: 10.232.0.0/24
  allow_tcp_ports: [%[3]s]   # the GitLab double on the gateway
forges:
  - name: gitlab
    type: gitlab
    url: http://127.0.0.1:%[3]s
    guest_url: http://10.232.0.1:%[3]s
    token_file: %[2]s/gitlab-token
pools:
  - name: glf
    forge: gitlab
    scope: project:acme/app
    labels: [%[4]s]
    min_idle: 0
    max: 1
    vm:
      vcpus: 1
      memory_mib: 512
      kernel: %[5]s
      modules_dir: %[6]s
      kernel_modules: [virtio_mmio, virtio_net]
      root_initramfs: %[7]s
    timeouts:
      boot: 2m
      job: 10m
`, state, work, glPort, glTag, kernel, modules, root))

	orch := startOrchestrator(t, ns, bin, cfgPath, state)
	orch.waitFor(t, 5*time.Minute, "the killer job to end", func() bool {
		st := gl.Jobs()[killer].Status
		return st != "pending" && st != "running" && st != "canceling"
	})
	j := gl.Jobs()[killer]
	if j.Status != "canceled" {
		t.Fatalf("the job whose runner died is %s, want canceled", j.Status)
	}
	took := j.EndedAt.Sub(j.StartedAt)
	t.Logf("FIGURE a GitLab job that killed its runner was cancelled at GitLab %s after GitLab handed it out", took.Round(time.Millisecond))
	if took > 20*time.Second {
		t.Fatalf("cancelled %s after it started: not at once", took)
	}
	orch.waitFor(t, time.Minute, "the failure logged", func() bool {
		return len(logLines(orch.log, regexp.MustCompile(`level=WARN msg="job failed at the forge".*job=`+fmt.Sprint(killer)))) == 1 &&
			len(logLines(orch.log, regexp.MustCompile(`msg="gitlab: job cancelled: its runner died before it ended".*job=`+fmt.Sprint(killer)))) == 1
	})

	// The next job runs, in a VM of its own.
	next := gl.AddJob("acme/app", "next", []string{glTag}, glJobScript)
	orch.waitFor(t, 5*time.Minute, "the next job to succeed", func() bool { return gl.Jobs()[next].Status == "success" })
	orch.waitFor(t, 2*time.Minute, "VMs and runners to be gone", func() bool {
		return len(vmDirs(state)) == 0 && len(gl.Runners()) == 0
	})
	if n := len(logLines(orch.log, regexp.MustCompile(`msg="vm booting"`))); n != 2 {
		t.Fatalf("%d VMs booted, want 2", n)
	}
	orch.terminate(t)
	orch.waitExit(t, time.Minute)
}
