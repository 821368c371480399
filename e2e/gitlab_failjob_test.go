//go:build e2e

package e2e

import (
	"fmt"
	"regexp"
	"testing"
	"time"
)

// TestGitLabJobWhoseRunnerDiesIsCancelledAtOnce: a job that kills its
// gitlab-runner (the stand-in, in a real QEMU guest) is cancelled at the
// GitLab double within seconds of the runner's death (GitLab's own
// clean-up would take an hour or more), by the job GitLab listed for the
// VM's runner; the next job then runs in a VM of its own.
func TestGitLabJobWhoseRunnerDiesIsCancelledAtOnce(t *testing.T) {
	r := newGitLabRig(t, "glf")
	gl, state := r.gl, r.state

	// The job's shell is the stand-in's child: it kills its runner.
	killer := gl.AddJob("acme/app", "kills-its-runner", []string{glTag}, `echo "about to kill my runner"`, `kill -9 $PPID`, `sleep 300`)

	cfg := r.config("glfail", "faglf0", "10.232.0.0/24")
	cfg.Pools = []poolConfig{r.pool("glf", []string{glTag}, 1)}
	orch := r.start(cfg)
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
