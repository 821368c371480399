//go:build e2e

package e2e

import (
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
)

// burstWorkflow is a burst of 4 jobs on one push.
const burstWorkflow = `on: [push]
jobs:
  burst:
    strategy:
      matrix:
        n: [1, 2, 3, 4]
    runs-on: fireactions-disk
    steps:
      - run: echo "fireactions-vm=$(hostname) burst ${{ matrix.n }}"
`

// TestFullStateDiskRunsEveryJobOneAtATime: on a state disk with room for
// one VM's start (its initramfs, a copy of the pool archive, which leaves
// the disk once its monitor has it), a burst of jobs wanting two starts at
// once runs every job: a VM that finds no room does not back the pool
// off, the pool starts one VM at a time until one boots, and the log says
// why. While a VM lives its directory holds no copy of the pool archive,
// named or held open by its monitor.
func TestFullStateDiskRunsEveryJobOneAtATime(t *testing.T) {
	r := newGiteaRig(t, "fa-disk")
	gitea, state, work, ns := r.gitea, r.state, r.work, r.ns
	// The state directory is a small file system of its own; cleanups run
	// last first, so it is unmounted after the orchestrator ended.
	if err := os.MkdirAll(state, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=96m,mode=0700", "fa-disk-state", state).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", state).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", state, err, out)
		}
	})
	cfg := r.config("diskfull", work, "fadisk0", "10.227.0.0/24")
	pool := r.pool("disk", "fireactions-disk", 1, 3)
	pool.VM.VCPUs, pool.VM.MemoryMiB = 1, 384
	pool.Timeouts = &timeoutsConfig{Boot: "3m", Job: "10m"}
	cfg.Pools = []poolConfig{pool}
	orch := r.start(cfg)
	first := orch.waitVM(t, 4*time.Minute, "the min_idle VM to be idle", "idle")

	// A VM's start takes its initramfs, a copy of the pool archive; its
	// life takes its directory's files, and whatever of the state disk
	// its monitor holds open that no name shows (the initramfs until its
	// release: vmm.BootReleaser).
	footprint := dirBytes(t, filepath.Join(state, "vms", first))
	startCost := dirBytes(t, filepath.Join(state, "pools", "disk"))
	var st syscall.Statfs_t
	if err := syscall.Statfs(state, &st); err != nil {
		t.Fatal(err)
	}
	unnamed := int64(st.Blocks-st.Bfree)*st.Bsize - dirBytes(t, state)
	t.Logf("FIGURE state disk per VM (idle, %s): %d bytes in its directory, %d held by no name; its initramfs while it starts: %d bytes", first, footprint, unnamed, startCost)
	if footprint+unnamed >= startCost/2 {
		t.Errorf("the idle VM takes %d bytes of the state disk (%d named, %d held open), a copy of the pool archive (%d)", footprint+unnamed, footprint, unnamed, startCost)
	}
	// Leave room for one VM's start and a half: one start at a time
	// fits, two do not.
	free := int64(st.Bavail) * st.Bsize
	filler := free - startCost*3/2
	if filler <= 0 {
		t.Fatalf("the state disk has %d bytes free, less than a VM's start and a half (%d)", free, startCost*3/2)
	}
	fill, err := os.Create(filepath.Join(state, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Fallocate(int(fill.Fd()), 0, 0, filler); err != nil {
		t.Fatalf("fill the state disk: %v", err)
	}
	fill.Close()

	gitea.api(http.MethodPost, "/api/v1/user/repos", map[string]any{"name": "burst", "default_branch": "main"}, nil)
	tree := filepath.Join(work, "repo")
	writeFile(t, filepath.Join(tree, ".gitea/workflows/burst.yml"), 0o644, burstWorkflow)
	burst := time.Now()
	gitea.push(tree, "ci/burst", "burst")
	orch.waitJobsDone(t, 12*time.Minute, "4 jobs to complete", gitea, "ci/burst", 4)
	t.Logf("FIGURE burst of 4 jobs on a state disk with room for one VM start: all done in %s", time.Since(burst).Round(time.Second))
	jobs := gitea.jobs("ci/burst")
	sort.Slice(jobs, func(i, j int) bool { return jobs[i].StartedAt.Before(jobs[j].StartedAt) })
	for _, j := range jobs {
		if j.Conclusion != "success" {
			t.Errorf("job %d concluded %q", j.ID, j.Conclusion)
		}
	}
	noRoom := logLines(orch.log, regexp.MustCompile(`msg="vm gone".*no space left on device`))
	t.Logf("FIGURE VMs that found no room on the state disk during the burst: %d", len(noRoom))
	if lines := logLines(orch.log, regexp.MustCompile(`pool backing off`)); len(lines) != 0 {
		t.Errorf("the pool backed off for a full disk:\n%s", strings.Join(lines, "\n"))
	}
	why := logLines(orch.log, regexp.MustCompile(`level=WARN msg="host resource exhausted: starting one vm at a time until one boots" pool=disk cause=disk`))
	if len(why) == 0 {
		t.Error("the log does not say why only one VM runs at a time")
	} else if !strings.Contains(why[0], "no space left on device") {
		t.Errorf("the shortage line lacks the error: %s", why[0])
	}
	orch.terminate(t)
	orch.waitExit(t, 2*time.Minute)
	if err := os.Remove(filepath.Join(state, "filler")); err != nil {
		t.Error(err)
	}
	assertNothingLeft(t, ns, gitea, state, "fadisk0")
}

// dirBytes is the space the files under dir take (allocated blocks).
func dirBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	err := filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && !fi.IsDir() {
			n += st.Blocks * 512
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}
