package agent

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// The job's budget: the runner and its job run as one user, so a limit per
// user (RLIMIT_NPROC) is shared between them, and a job that fork-bombs
// took every process the runner could have, which then died making a
// thread. Instead, two cgroups under the guest's cgroup2 root split them:
//
//   - runnerCgroup holds the runner process alone, without limits;
//   - jobCgroup holds everything the runner starts (the job's steps and
//     all they start), with pids.max and memory.max derived from the VM,
//     and memory.oom.group: out of memory, all of it is killed at once.
//
// The runner's RLIMIT_NPROC is lifted: the cgroup is the bound now. The
// job's processes cannot move themselves back: cgroup.procs is root's.
//
// The runner's children are born in its cgroup (a fork inherits it); the
// mover moves every process of runnerCgroup but the runner into jobCgroup,
// polling runnerCgroup's cgroup.procs every moverPoll. The race: a child
// lives in the runner's cgroup, unbounded, until the next sweep, and what
// it forks meanwhile too. What bounds it: a sweep repeats at once as long
// as it moved anything, so it ends only when the runner is alone; once
// moved, a process's children are born in jobCgroup; and a runner's child
// is a shell or a program the runner just exec'd, which has rarely forked
// within one moverPoll (end to end, a fork-bombing step was the only
// process ever moved: the bomb forked entirely inside jobCgroup). It is
// not a hard bound: a child that forks faster than the sweeps can keep
// some processes outside the budget for a while. The proc connector
// would narrow the window, not close it; only a runner that starts its
// job into the cgroup itself (clone3 CLONE_INTO_CGROUP) would.
const (
	runnerCgroup = "runner"
	jobCgroup    = "job"
	moverPoll    = 5 * time.Millisecond

	// jobPidsCap bounds the job's processes and threads: enough for
	// parallel builds, far below the kernel's threads-max on a VM of a
	// few GiB.
	jobPidsCap = 4096
	// The memory kept for the agent, the runner and the kernel's own
	// unaccounted use: a quarter of what is available, within these
	// bounds.
	minReserve = 32 << 20
	maxReserve = 512 << 20
	// killWait bounds the wait for the job's cgroup to empty after
	// cgroup.kill.
	killWait = 5 * time.Second
)

// budget is the pair of cgroups under dir (the cgroup2 mount, a host path).
type budget struct {
	// sharesMemory reports whether process pid still shares the runner's
	// memory: a child the runner forked (vfork-like, as Go does) that has
	// not exec'd yet. The mover leaves it until it has: moved, it would
	// take the runner's memory into the job's cgroup, whose OOM killer
	// would then pick it and kill the runner with it (found end to end).
	// nil: never.
	sharesMemory func(runner, pid int) bool
	moved        atomic.Int64 // by the mover
	proc         string       // the guest's /proc, a host path
	dir          string
	pidsMax      int
	memoryMax    int64
	controller   []string // enabled for the children
}

// jobLimits derives the job's budget from the VM's available memory
// (MemAvailable when the runner starts, in bytes: not MemTotal, which
// counts the initramfs root the guest holds in memory) and the kernel's
// threads-max: the memory less a reserve for the agent and the runner, and
// at most half of threads-max processes (the rest is the runner's, the
// agent's and the kernel's).
func jobLimits(available int64, threadsMax int) (pids int, memory int64) {
	reserve := min(max(available/4, minReserve), maxReserve)
	memory = max(available-reserve, available/2)
	pids = jobPidsCap
	if threadsMax > 0 {
		pids = min(pids, threadsMax/2)
	}
	return max(pids, 64), memory
}

// makeCgroups mounts cgroup2 unless mounted, enables the pids and memory
// controllers (and cpu when the kernel has it, so the runner gets CPU
// however many processes the job has) for the root's children, and
// creates the runner's and the job's cgroups, without limits yet. Nothing
// in it is one VM's: a template does it before it waits for its identity
// (see awaitIdentity), so a restore finds it done; setupBudget's second
// pass then only finds what exists.
func (a *Agent) makeCgroups() (*budget, error) {
	if err := a.mountCgroups(); err != nil {
		return nil, err
	}
	dir := a.path(cgroupMount)
	avail, err := os.ReadFile(filepath.Join(dir, "cgroup.controllers"))
	if err != nil {
		return nil, fmt.Errorf("reading cgroup controllers: %w", err)
	}
	have := strings.Fields(string(avail))
	proc := a.path("/proc")
	b := &budget{dir: dir, proc: proc, sharesMemory: func(runner, pid int) bool { return sharesMemory(proc, runner, pid) }}
	for _, c := range []string{"pids", "memory", "cpu"} {
		switch {
		case slices.Contains(have, c):
			b.controller = append(b.controller, c)
		case c != "cpu":
			return nil, fmt.Errorf("the kernel's cgroup2 has no %s controller (has %q)", c, strings.TrimSpace(string(avail)))
		}
	}
	enable := "+" + strings.Join(b.controller, " +")
	if err := writeCgroup(dir, "cgroup.subtree_control", enable); err != nil {
		return nil, err
	}
	for _, c := range []string{runnerCgroup, jobCgroup} {
		if err := os.Mkdir(filepath.Join(dir, c), 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("creating cgroup %s: %w", c, err)
		}
	}
	return b, nil
}

// setupBudget makes the job's cgroups (makeCgroups) and sets the job's
// limits, derived from the memory available now.
func (a *Agent) setupBudget() (*budget, error) {
	b, err := a.makeCgroups()
	if err != nil {
		return nil, err
	}
	dir := b.dir
	available, err := memAvailable(a.path("/proc/meminfo"))
	if err != nil {
		return nil, err
	}
	threadsMax, _ := readInt(a.path("/proc/sys/kernel/threads-max"))
	b.pidsMax, b.memoryMax = jobLimits(available, threadsMax)
	job := filepath.Join(dir, jobCgroup)
	if err := writeCgroup(job, "pids.max", strconv.Itoa(b.pidsMax)); err != nil {
		return nil, err
	}
	if err := writeCgroup(job, "memory.max", strconv.FormatInt(b.memoryMax, 10)); err != nil {
		return nil, err
	}
	// A job out of memory is killed whole (what it runs then fails, and
	// the runner reports it), not one process at a time: that thrashed a
	// fork bomb's hundreds of processes for minutes on one vCPU, and the
	// bomb's own timeout never got to run.
	if err := writeCgroup(job, "memory.oom.group", "1"); err != nil {
		return nil, err
	}
	return b, nil
}

// enter puts the runner (pid) into its cgroup. The agent does it right
// after starting the runner, before the runner can have taken a job.
func (b *budget) enter(pid int) error {
	return writeCgroup(filepath.Join(b.dir, runnerCgroup), "cgroup.procs", strconv.Itoa(pid))
}

// move runs the mover until ctx ends: every process in the runner's cgroup
// other than runner goes to the job's. moveOne is the write that moves
// one (the kernel then lists it in the job's cgroup.procs); a process
// that exited meanwhile is no error.
func (b *budget) move(ctx context.Context, runner int, moveOne func(pid int) error, logf func(string, ...any)) {
	procs := filepath.Join(b.dir, runnerCgroup, "cgroup.procs")
	tick := time.NewTicker(moverPoll)
	defer tick.Stop()
	failures := 0
	for {
		for moved := true; moved; {
			moved = false
			pids, err := readPids(procs)
			if err != nil {
				logf("budget: reading %s: %v; the job's processes are no longer moved", procs, err)
				return
			}
			for _, pid := range pids {
				if pid == runner || b.sharesMemory != nil && b.sharesMemory(runner, pid) {
					continue // the next sweep takes it once it has exec'd
				}
				if err := moveOne(pid); err == nil {
					moved = true
					if b.moved.Add(1) == 1 {
						comm, _ := os.ReadFile(filepath.Join(b.proc, strconv.Itoa(pid), "comm"))
						logf("budget: the runner's first child (pid %d, %s) moved into the job's cgroup; runner pid %d", pid, strings.TrimSpace(string(comm)), runner)
					}
				} else if failures++; failures <= 3 {
					logf("budget: moving pid %d into the job's cgroup: %v", pid, err)
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// moveTo is the real moveOne: a write of pid to the job's cgroup.procs.
func (b *budget) moveTo(pid int) error {
	return writeCgroup(filepath.Join(b.dir, jobCgroup), "cgroup.procs", strconv.Itoa(pid))
}

// kill ends everything left in the job's and the runner's cgroups once the
// runner has exited (cgroup.kill), and waits, for killWait at most, until
// both are empty. It returns how long that took.
func (b *budget) kill() (time.Duration, error) {
	start := time.Now()
	for _, c := range []string{jobCgroup, runnerCgroup} {
		if err := writeCgroup(filepath.Join(b.dir, c), "cgroup.kill", "1"); err != nil {
			return time.Since(start), err
		}
	}
	for {
		if !populated(filepath.Join(b.dir, jobCgroup)) && !populated(filepath.Join(b.dir, runnerCgroup)) {
			return time.Since(start), nil
		}
		if time.Since(start) > killWait {
			return time.Since(start), fmt.Errorf("the job's cgroup still has processes after %s", killWait)
		}
		time.Sleep(time.Millisecond)
	}
}

// populated reports whether the cgroup at dir or a descendant has a
// process, from its cgroup.events (true when unreadable).
func populated(dir string) bool {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.events"))
	if err != nil {
		return true
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 2 && f[0] == "populated" {
			return f[1] != "0"
		}
	}
	return true
}

// writeCgroup writes value to the cgroup file name under dir (one write,
// as the kernel wants it).
func writeCgroup(dir, name, value string) error {
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("writing cgroup file: %w", err)
	}
	_, err = f.Write([]byte(value))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("writing %q to %s: %w", value, filepath.Join(dir, name), err)
	}
	return nil
}

// readPids reads a cgroup.procs file: one pid a line.
func readPids(p string) ([]int, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		if n, err := strconv.Atoi(f); err == nil {
			pids = append(pids, n)
		}
	}
	return pids, nil
}

// memAvailable is MemAvailable of a /proc/meminfo, in bytes.
func memAvailable(meminfo string) (int64, error) {
	b, err := os.ReadFile(meminfo)
	if err != nil {
		return 0, fmt.Errorf("reading the VM's memory: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "MemAvailable:"); ok {
			f := strings.Fields(rest)
			if len(f) == 2 && f[1] == "kB" {
				if kb, err := strconv.ParseInt(f[0], 10, 64); err == nil && kb > 0 {
					return kb << 10, nil
				}
			}
		}
	}
	return 0, fmt.Errorf("no MemAvailable in %s", meminfo)
}

// readInt reads a file holding one integer.
func readInt(p string) (int, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// budget sets up the job's budget, or logs why the job runs without one
// (a kernel without cgroup2, pids or memory controllers) and returns nil.
func (a *Agent) budget() *budget {
	b, err := a.setupBudget()
	if err != nil {
		a.logf("budget: none, the job shares the runner's limits: %v", err)
		return nil
	}
	a.logf("budget: the job's processes get at most %d tasks and %d MiB; the runner is outside (controllers %s)",
		b.pidsMax, b.memoryMax>>20, strings.Join(b.controller, ","))
	return b
}

// budgetRunner puts the started runner (pid) into its cgroup, lifts its
// RLIMIT_NPROC and starts the mover; the returned func stops the mover
// and waits for it. With b nil it does nothing.
func (a *Agent) budgetRunner(ctx context.Context, b *budget, pid int) (stop func()) {
	if b == nil {
		return func() {}
	}
	if err := b.enter(pid); err != nil {
		a.logf("budget: %v; the job runs without its budget", err)
		return func() {}
	}
	if err := a.Sys.LiftProcessLimit(pid); err != nil {
		a.logf("budget: lifting the runner's process limit: %v", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		b.move(ctx, pid, b.moveTo, a.logf)
	}()
	return func() { cancel(); <-done }
}

// killBudget kills what is left in the budget's cgroups once the runner
// has exited, and logs how long it took.
func (a *Agent) killBudget(b *budget) {
	if b == nil {
		return
	}
	job := filepath.Join(b.dir, jobCgroup)
	a.logf("budget: %d processes moved into the job's cgroup; at the runner's exit it held %s tasks (pids.events: %s; memory.events: %s)",
		b.moved.Load(), cgroupValue(job, "pids.current"), cgroupValue(job, "pids.events"), cgroupValue(job, "memory.events"))
	took, err := b.kill()
	if err != nil {
		a.logf("budget: killing the job's cgroup: %v", err)
		return
	}
	a.logf("budget: the job's cgroup emptied by cgroup.kill in %.3fs", took.Seconds())
}

// cgroupValue is a cgroup file's content on one line, for the console.
func cgroupValue(dir, name string) string {
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		return "?"
	}
	return strings.Join(strings.Fields(string(b)), " ")
}

// kcmpVM is kcmp(2)'s KCMP_VM: do two processes share their memory?
const kcmpVM = 1

// sharesMemory reports whether processes a and b share one memory (mm):
// kcmp(2), or where the kernel lacks it, whether they run the same
// executable (a child that has not exec'd yet runs its parent's).
func sharesMemory(proc string, a, b int) bool {
	r, _, errno := unix.Syscall6(unix.SYS_KCMP, uintptr(a), uintptr(b), kcmpVM, 0, 0, 0)
	if errno == 0 {
		return r == 0
	}
	ea, err1 := os.Readlink(filepath.Join(proc, strconv.Itoa(a), "exe"))
	eb, err2 := os.Readlink(filepath.Join(proc, strconv.Itoa(b), "exe"))
	return err1 == nil && err2 == nil && ea == eb
}
