package agent

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/internal/hosttest"
)

// fakeCgroupRoot lays out, under root, what a guest's kernel shows: a
// cgroup2 mount at /sys/fs/cgroup with the given controllers and the
// files of the runner's and the job's cgroups, /proc/meminfo and
// threads-max.
func fakeCgroupRoot(t *testing.T, root, controllers string, memKB, threadsMax int) string {
	t.Helper()
	cg := filepath.Join(root, "sys/fs/cgroup")
	files := map[string]string{
		"cgroup.controllers":                   controllers + "\n",
		"cgroup.subtree_control":               "",
		"runner/cgroup.procs":                  "",
		"runner/cgroup.kill":                   "",
		"runner/cgroup.events":                 "populated 0\nfrozen 0\n",
		"job/cgroup.procs":                     "",
		"job/cgroup.kill":                      "",
		"job/cgroup.events":                    "populated 0\nfrozen 0\n",
		"job/pids.max":                         "max\n",
		"job/memory.max":                       "max\n",
		"job/memory.oom.group":                 "",
		"../../../proc/meminfo":                "MemTotal:       " + strconv.Itoa(2*memKB) + " kB\nMemFree:          1000 kB\nMemAvailable:   " + strconv.Itoa(memKB) + " kB\n",
		"../../../proc/sys/kernel/threads-max": strconv.Itoa(threadsMax) + "\n",
	}
	for name, content := range files {
		p := filepath.Join(cg, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return cg
}

// The job's budget is derived from the VM: its available memory less a
// reserve of a quarter (32 MiB to 512 MiB) for the agent and the runner,
// and at most 4096 tasks, at most half the kernel's threads-max.
func TestJobLimitsAreDerivedFromTheVM(t *testing.T) {
	const mib = 1 << 20
	for _, c := range []struct {
		mem        int64
		threadsMax int
		pids       int
		memory     int64
	}{
		{256 * mib, 1900, 950, 192 * mib},
		{1024 * mib, 7800, 3900, 768 * mib},
		{4096 * mib, 31000, 4096, 3584 * mib},
		{16384 * mib, 126000, 4096, 15872 * mib},
		{100 * mib, 0, 4096, 68 * mib}, // threads-max unknown
		{48 * mib, 200, 100, 24 * mib}, // half the memory at least
	} {
		pids, memory := jobLimits(c.mem, c.threadsMax)
		if pids != c.pids || memory != c.memory {
			t.Errorf("jobLimits(%d MiB, %d) = %d tasks, %d MiB; want %d, %d MiB",
				c.mem/mib, c.threadsMax, pids, memory/mib, c.pids, c.memory/mib)
		}
	}
}

// Setting up the budget enables the pids, memory and cpu controllers for
// the root's children and writes the job's limits into its cgroup: out of
// memory, the job is killed whole.
func TestBudgetWritesTheJobsLimits(t *testing.T) {
	root := t.TempDir()
	cg := fakeCgroupRoot(t, root, "cpuset cpu io memory hugetlb pids rdma misc", 1024*1024, 7800)
	a := &Agent{Root: root, Sys: newFakeSys(t, root), Console: &bytes.Buffer{}}
	b, err := a.setupBudget()
	if err != nil {
		t.Fatal(err)
	}
	for file, want := range map[string]string{
		"cgroup.subtree_control": "+pids +memory +cpu",
		"job/pids.max":           "3900",
		"job/memory.max":         strconv.Itoa(768 << 20),
		"job/memory.oom.group":   "1",
	} {
		if got := readFile(t, filepath.Join(cg, file)); got != want {
			t.Errorf("%s = %q, want %q", file, got, want)
		}
	}
	if err := b.enter(4242); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(cg, "runner/cgroup.procs")); got != "4242" {
		t.Errorf("runner/cgroup.procs = %q, want the runner's pid", got)
	}
}

// A kernel without the pids or memory controller gives no budget, with
// the controller named; without cpu the budget stands.
func TestBudgetNeedsPidsAndMemory(t *testing.T) {
	for controllers, want := range map[string]string{
		"cpu memory":  "no pids controller",
		"cpu pids":    "no memory controller",
		"memory pids": "",
	} {
		root := t.TempDir()
		cg := fakeCgroupRoot(t, root, controllers, 512*1024, 3900)
		a := &Agent{Root: root, Sys: newFakeSys(t, root), Console: &bytes.Buffer{}}
		_, err := a.setupBudget()
		switch {
		case want == "" && err != nil:
			t.Errorf("controllers %q: %v", controllers, err)
		case want == "" && readFile(t, filepath.Join(cg, "cgroup.subtree_control")) != "+pids +memory":
			t.Errorf("controllers %q: subtree_control %q", controllers, readFile(t, filepath.Join(cg, "cgroup.subtree_control")))
		case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
			t.Errorf("controllers %q: error %v, want %q", controllers, err, want)
		}
	}
}

// fakeKernelMove is the kernel's side of a write to the job's
// cgroup.procs: the process leaves the runner's cgroup. Moving pid
// forks[pid] first adds that child to the runner's cgroup, as a process
// that forked just before it was moved.
type fakeKernelMove struct {
	t     *testing.T
	cg    string
	forks map[int]int
	mu    sync.Mutex
	moved []int
}

func (k *fakeKernelMove) move(pid int) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	procs := filepath.Join(k.cg, "runner/cgroup.procs")
	pids, err := readPids(procs)
	if err != nil {
		return err
	}
	pids = slices.DeleteFunc(pids, func(p int) bool { return p == pid })
	if child, ok := k.forks[pid]; ok {
		pids = append(pids, child)
	}
	var b strings.Builder
	for _, p := range pids {
		b.WriteString(strconv.Itoa(p) + "\n")
	}
	k.moved = append(k.moved, pid)
	return os.WriteFile(procs, []byte(b.String()), 0o644)
}

// The mover takes every process of the runner's cgroup but the runner
// into the job's, including children forked before their parent moved,
// and never the runner.
func TestMoverTakesTheRunnersChildrenIntoTheJob(t *testing.T) {
	root := t.TempDir()
	cg := fakeCgroupRoot(t, root, "memory pids", 512*1024, 3900)
	const runner = 100
	if err := os.WriteFile(filepath.Join(cg, "runner/cgroup.procs"), []byte("100\n101\n102\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	k := &fakeKernelMove{t: t, cg: cg, forks: map[int]int{101: 103, 103: 104}}
	b := &budget{dir: cg}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		b.move(ctx, runner, k.move, t.Logf)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		pids, _ := readPids(filepath.Join(cg, "runner/cgroup.procs"))
		if slices.Equal(pids, []int{runner}) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the runner's cgroup still holds %v", pids)
		}
		time.Sleep(time.Millisecond)
	}
	// A child the runner starts later is moved too.
	if err := os.WriteFile(filepath.Join(cg, "runner/cgroup.procs"), []byte("100\n105\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for {
		k.mu.Lock()
		n := len(k.moved)
		k.mu.Unlock()
		if n == 5 || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	<-done
	got := slices.Sorted(slices.Values(k.moved))
	if want := []int{101, 102, 103, 104, 105}; !slices.Equal(got, want) {
		t.Errorf("moved %v, want %v", got, want)
	}
}

// A boot with cgroup2 puts the runner into its own cgroup, lifts its
// process limit, and once it has exited kills the job's and the runner's
// cgroups before the scan for the user's leftovers.
func TestBootPutsTheRunnerOutsideTheJobsBudget(t *testing.T) {
	a, sys, con := bootAgent(t, func(root string) {
		fakeCgroupRoot(t, root, "cpu memory pids", 512*1024, 3900)
	})
	cg := filepath.Join(a.Root, "sys/fs/cgroup")
	calls := sys.callList()
	start := slices.IndexFunc(calls, func(c string) bool { return strings.HasPrefix(c, "start ") })
	lift := slices.Index(calls, "lift-nproc runner")
	if start < 0 || lift < start {
		t.Errorf("want the runner started, then its process limit lifted:\n%s", strings.Join(calls, "\n"))
	}
	pid, err := strconv.Atoi(readFile(t, filepath.Join(cg, "runner/cgroup.procs")))
	if err != nil || pid != sys.cmd.Process.Pid {
		t.Errorf("runner/cgroup.procs holds %q, want the runner's pid %d", readFile(t, filepath.Join(cg, "runner/cgroup.procs")), sys.cmd.Process.Pid)
	}
	for _, c := range []string{"job", "runner"} {
		if got := readFile(t, filepath.Join(cg, c, "cgroup.kill")); got != "1" {
			t.Errorf("%s/cgroup.kill = %q, want 1 once the runner exited", c, got)
		}
	}
	if !strings.Contains(con.String(), "budget: the job's processes get at most 1950 tasks") ||
		!strings.Contains(con.String(), "budget: the job's cgroup emptied by cgroup.kill") {
		t.Errorf("console does not show the budget:\n%s", con.String())
	}
}

// A guest kernel without cgroup2 boots the runner without a budget, and
// says so on the console.
func TestBootWithoutCgroupsRunsWithoutABudget(t *testing.T) {
	_, sys, con := bootAgent(t, nil)
	if !slices.ContainsFunc(sys.callList(), func(c string) bool { return strings.HasPrefix(c, "start ") }) {
		t.Fatalf("the runner did not start:\n%s", strings.Join(sys.callList(), "\n"))
	}
	if !strings.Contains(con.String(), "budget: none, the job shares the runner's limits") {
		t.Errorf("console does not say the job runs without a budget:\n%s", con.String())
	}
}

// bootAgent boots an agent on a test root, which prepare (when not nil)
// adds to, and returns it with its fake system and console.
func bootAgent(t *testing.T, prepare func(root string)) (*Agent, *fakeSys, *hosttest.SyncBuffer) {
	t.Helper()
	host := newHostServer(t, "vm-token")
	root := newTestRoot(t, testConfig(host.URL))
	if prepare != nil {
		prepare(root)
	}
	sys := newFakeSys(t, root)
	con := &hosttest.SyncBuffer{}
	a := &Agent{Root: root, Sys: sys, Console: con}
	a.Boot(context.Background())
	return a, sys, con
}

// A child of the runner that still shares its memory (forked, not yet
// exec'd) stays in the runner's cgroup until it has exec'd: moved, the
// job's OOM killer could pick it, and killing it kills the runner.
func TestMoverWaitsForAChildToExec(t *testing.T) {
	root := t.TempDir()
	cg := fakeCgroupRoot(t, root, "memory pids", 512*1024, 3900)
	const runner, child = 100, 106
	must(t, os.WriteFile(filepath.Join(cg, "runner/cgroup.procs"), []byte("100\n106\n"), 0o644))
	k := &fakeKernelMove{t: t, cg: cg}
	var execd sync.WaitGroup
	execd.Add(1)
	var mu sync.Mutex
	shared, asked := true, 0
	b := &budget{dir: cg, sharesMemory: func(r, pid int) bool {
		mu.Lock()
		defer mu.Unlock()
		if r != runner || pid != child {
			t.Errorf("sharesMemory(%d, %d)", r, pid)
		}
		if asked++; asked == 3 {
			execd.Done()
		}
		return shared
	}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go b.move(ctx, runner, k.move, t.Logf)
	execd.Wait() // asked three times, across sweeps
	k.mu.Lock()
	if len(k.moved) != 0 {
		t.Fatalf("moved %v while it shared the runner's memory", k.moved)
	}
	k.mu.Unlock()
	mu.Lock()
	shared = false
	mu.Unlock()
	deadline := time.Now().Add(10 * time.Second)
	for {
		k.mu.Lock()
		moved := slices.Clone(k.moved)
		k.mu.Unlock()
		if slices.Equal(moved, []int{child}) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("moved %v once it exec'd, want [%d]", moved, child)
		}
		time.Sleep(time.Millisecond)
	}
}

// sharesMemory tells a process from itself (one memory) and from a child
// that has exec'd (its own).
func TestSharesMemoryTellsAnExecdChild(t *testing.T) {
	cmd := exec.Command("sleep", "30")
	must(t, cmd.Start())
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	self := os.Getpid()
	if !sharesMemory("/proc", self, self) {
		t.Errorf("a process does not share memory with itself")
	}
	deadline := time.Now().Add(10 * time.Second)
	for sharesMemory("/proc", self, cmd.Process.Pid) {
		if time.Now().After(deadline) {
			t.Fatalf("the exec'd child %d still shares the test's memory", cmd.Process.Pid)
		}
		time.Sleep(time.Millisecond)
	}
}
