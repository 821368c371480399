package pool_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/forge"
	"github.com/nixos-fireactions/nixos-fireactions/vmstate"
)

// TestCrashLoop SIGKILLs a real pool manager at random moments while it
// creates, boots, runs and ends VMs under load, and after each kill finds
// every record readable and the next run's Recover correct: each VM whose
// process lives adopted or killed, no record without a VM, every runner at
// the forge a live VM's or queued for removal, no address twice. A final
// run recovers and drains and leaves nothing: no process, record, runner.
//
// The orchestrator is this binary re-executed (crashloop_child_test.go);
// its VMs are processes of their own that outlive it, found again by
// their command line; the forge is served here, so its runners outlive
// every crash. CRASHLOOP_SEED replays a run's kill points.
func TestCrashLoop(t *testing.T) {
	crashChildMain()
	seed := time.Now().UnixNano()
	if s := os.Getenv("CRASHLOOP_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseInt(s, 10, 64); err != nil {
			t.Fatalf("CRASHLOOP_SEED: %v", err)
		}
	}
	t.Logf("seed %d (CRASHLOOP_SEED=%d replays the kill points)", seed, seed)
	rng := rand.New(rand.NewSource(seed))
	const (
		iterations = 30
		budget     = 25 * time.Second // no new iteration starts past it
	)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	fs := newCrashForge()
	srv := httptest.NewServer(fs)
	defer srv.Close()
	owner, err := forge.NewOwner(crashHost)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { killAllGuests(dir) })

	start := time.Now()
	stats := map[string]int{}
	run := 0
	held := true  // the VMs are held still while the run recovers
	torn := false // the last kill left half an entry at the log's end
	for ; run < iterations && (run < 10 || time.Since(start) < budget); run++ {
		outage := run > 0 && rng.Intn(4) == 0 // the forge refuses removals this run
		duringRecover := run > 0 && rng.Intn(6) == 0
		duringDrain := rng.Intn(5) == 0 // killed while it drains (SIGTERM's path)
		fs.setOutage(outage)
		child := startOrchestrator(t, self, dir, srv.URL, run, false)
		if duringRecover {
			time.Sleep(time.Duration(rng.Intn(150)) * time.Millisecond)
			stats["killed during recovery"]++
		} else {
			view := waitView(t, child, dir, run)
			if torn && !strings.Contains(child.log(), "cutting the log's torn or corrupt tail") {
				t.Fatalf("run %d: the torn end of the log was not cut (logged) at Open:\n%s", run, child.logTail())
			}
			if held {
				checkOrFail(t, child, fmt.Sprintf("run %d, after Recover", run),
					checkRecovered(view, stateDirOf(dir), mustLive(t, dir), fs.runners(), owner))
			} else if view.RecoverErr != "" {
				// VMs ran on meanwhile: what Recover left cannot be
				// compared with a state that moves; its error can.
				checkOrFail(t, child, fmt.Sprintf("run %d, after Recover", run), []error{errors.New(view.RecoverErr)})
			}
			stats["adopted"] += len(view.VMs)
			stats["pending removals"] += len(view.Pending)
			signalGuests(dir, syscall.SIGCONT)
			touch(t, goOf(dir, run))
			time.Sleep(time.Duration(50+rng.Intn(900)) * time.Millisecond)
			if duringDrain {
				touch(t, drainOf(dir, run))
				time.Sleep(time.Duration(rng.Intn(400)) * time.Millisecond)
				stats["killed while draining"]++
			}
		}
		child.kill(t)
		// A kill in the middle of a write leaves half an entry at the
		// log's end (SIGKILL rarely cuts a write() short: made here).
		torn = rng.Intn(3) == 0
		if torn {
			tearLog(t, stateDirOf(dir))
			stats["torn log ends made"]++
		}
		// VMs go on without their orchestrator; held still, they let the
		// next run's Recover be checked against a state that holds. Left
		// running, they report while it recovers (answered 503 until
		// then) and end their jobs while no orchestrator runs.
		held = rng.Intn(4) != 0
		sig := syscall.SIGSTOP
		if !held {
			sig = syscall.SIGCONT
			stats["restarts with vms running on"]++
		}
		for i := 0; i < 2; i++ {
			signalGuests(dir, sig)
			time.Sleep(30 * time.Millisecond)
		}
		checkOrFail(t, child, fmt.Sprintf("run %d, after SIGKILL", run),
			append(checkRecords(stateDirOf(dir)), checkLiveAddresses(stateDirOf(dir), mustLive(t, dir))...))
		checkOrFail(t, child, fmt.Sprintf("run %d", run), violations(dir))
		stats["records on disk at a kill"] += countRecords(stateDirOf(dir))
		stats["vm processes alive at a kill"] += len(mustLive(t, dir))
		// A VM process forked as the kill came may have exec'd since.
		signalGuests(dir, sig)
	}
	fs.setOutage(false)
	if !held {
		signalGuests(dir, syscall.SIGSTOP) // the final run's Recover is checked
	}
	child := startOrchestrator(t, self, dir, srv.URL, run, true)
	view := waitView(t, child, dir, run)
	checkOrFail(t, child, "final run, after Recover",
		checkRecovered(view, stateDirOf(dir), mustLive(t, dir), fs.runners(), owner))
	signalGuests(dir, syscall.SIGCONT)
	touch(t, goOf(dir, run))
	if err := child.wait(90 * time.Second); err != nil {
		t.Fatalf("final run: %v\n%s", err, child.logTail())
	}
	if _, err := os.Stat(drainedOf(dir, run)); err != nil {
		t.Fatalf("final run did not drain: %v\n%s", err, child.logTail())
	}
	checkOrFail(t, child, "after the final drain", checkNothingLeft(stateDirOf(dir), mustLive(t, dir), fs.runners(), owner))
	checkOrFail(t, child, "final run", violations(dir))
	jobs, registered := fs.counts()
	t.Logf("%d kills in %s; %d runners registered, %d jobs run; %v", run, time.Since(start).Round(time.Millisecond), registered, jobs, stats)
	if jobs == 0 || stats["vm processes alive at a kill"] == 0 {
		t.Fatalf("no load: %d jobs run, %d VM processes alive at the kills", jobs, stats["vm processes alive at a kill"])
	}
}

// The checks see what they are for: a torn record, a temporary file
// taken for a record, a leaked runner, process or record, an address held
// twice.
func TestCrashLoopChecksSeeTornRecordsAndLeaks(t *testing.T) {
	owner, err := forge.NewOwner(crashHost)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	store, err := vmstate.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	good := &vmstate.Record{ID: "00000000000a", Pool: crashPool, Phase: vmstate.Busy, PID: 101,
		Address: "10.200.0.2", RunnerID: "1", RunnerName: owner.RunnerName("00000000000a")}
	if err := store.Create(good); err != nil {
		t.Fatal(err)
	}
	view := crashView{VMs: []vmstate.Record{*good}}
	live := map[string][]int{good.ID: {101}}
	runners := []forgeRunner{{ID: "1", Name: good.RunnerName}}
	if errs := append(checkRecords(dir), checkRecovered(view, dir, live, runners, owner)...); len(errs) != 0 {
		t.Fatalf("a sound state fails the checks: %v", errs)
	}

	t.Run("vm directory without a record", func(t *testing.T) {
		lost := filepath.Join(dir, "00000000000b")
		if err := os.Mkdir(lost, 0o700); err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(lost)
		wantSeen(t, checkRecords(dir), "00000000000b")
	})
	t.Run("torn log end", func(t *testing.T) {
		// A kill in the middle of a write: the whole records still
		// read, nothing reported (the next Open cuts the end).
		tearLog(t, dir)
		if errs := checkRecords(dir); len(errs) != 0 {
			t.Fatalf("a torn end fails the check: %v", errs)
		}
		if n := countRecords(dir); n != 1 {
			t.Fatalf("%d records read past a torn end, want 1", n)
		}
	})
	t.Run("record without a phase", func(t *testing.T) {
		bad := &vmstate.Record{ID: "00000000000c", Pool: crashPool}
		// The store writes at the end of its whole entries: over the
		// torn end above.
		if err := store.Create(bad); err != nil {
			t.Fatal(err)
		}
		defer store.Remove(bad.ID)
		wantSeen(t, checkRecords(dir), "00000000000c")
	})
	t.Run("leaked runner", func(t *testing.T) {
		leaked := append(runners, forgeRunner{ID: "2", Name: owner.RunnerName("00000000000d")})
		wantSeen(t, checkRecovered(view, dir, live, leaked, owner), "00000000000d")
		wantSeen(t, checkNothingLeft(t.TempDir(), nil, leaked, owner), "00000000000d")
	})
	t.Run("another host's runner is not ours to judge", func(t *testing.T) {
		other, _ := forge.NewOwner("crash-2")
		theirs := append(runners, forgeRunner{ID: "3", Name: other.RunnerName("00000000000e")})
		if errs := checkRecovered(view, dir, live, theirs, owner); len(errs) != 0 {
			t.Fatalf("another host's runner fails the check: %v", errs)
		}
	})
	t.Run("process neither adopted nor killed", func(t *testing.T) {
		more := map[string][]int{good.ID: {101}, "00000000000f": {102}}
		wantSeen(t, checkRecovered(view, dir, more, runners, owner), "00000000000f")
		wantSeen(t, checkNothingLeft(t.TempDir(), more, nil, owner), "00000000000f")
	})
	t.Run("record without a vm", func(t *testing.T) {
		wantSeen(t, checkRecovered(crashView{}, dir, nil, nil, owner), good.ID)
		wantSeen(t, checkNothingLeft(dir, nil, nil, owner), good.ID)
	})
	t.Run("pending removal", func(t *testing.T) {
		dereg := &vmstate.Record{ID: "000000000010", Pool: crashPool, Phase: vmstate.Deregistering,
			RunnerID: "4", RunnerName: owner.RunnerName("000000000010")}
		if err := store.Create(dereg); err != nil {
			t.Fatal(err)
		}
		defer store.Remove(dereg.ID)
		rs := append(runners, forgeRunner{ID: "4", Name: dereg.RunnerName})
		pending := view
		pending.Pending = []string{dereg.RunnerName}
		if errs := checkRecovered(pending, dir, live, rs, owner); len(errs) != 0 {
			t.Fatalf("a queued removal fails the check: %v", errs)
		}
		wantSeen(t, checkRecovered(view, dir, live, rs, owner), "000000000010")
	})
	t.Run("address held twice", func(t *testing.T) {
		twin := *good
		twin.ID, twin.PID, twin.RunnerName = "000000000011", 103, owner.RunnerName("000000000011")
		both := crashView{VMs: []vmstate.Record{*good, twin}}
		if err := store.Create(&twin); err != nil {
			t.Fatal(err)
		}
		defer store.Remove(twin.ID)
		l := map[string][]int{good.ID: {101}, twin.ID: {103}}
		wantSeen(t, checkRecovered(both, dir, l, nil, owner), good.Address)
		wantSeen(t, checkLiveAddresses(dir, l), good.Address)
	})
}

func wantSeen(t *testing.T, errs []error, what string) {
	t.Helper()
	for _, err := range errs {
		if strings.Contains(err.Error(), what) {
			return
		}
	}
	t.Fatalf("the check did not see %s: %v", what, errs)
}

// checkRecords finds the state as a restart reads it: every record in
// the store's log whole (a record of a valid VM id, with a phase), and
// no VM directory without its record (a Create logs the record before
// it makes the directory; a Remove renames the directory away before it
// logs the removal). It reads without opening the store: nothing is
// repaired before the next run's Open.
func checkRecords(stateDir string) []error {
	var errs []error
	recs, err := vmstate.ReadRecords(stateDir)
	if err != nil {
		return []error{err}
	}
	listed := map[string]bool{}
	for _, r := range recs {
		listed[r.ID] = true
		if strings.HasPrefix(r.Reason, "unreadable") {
			errs = append(errs, fmt.Errorf("record of vm %s unreadable: %s", r.ID, r.Reason))
		} else if r.Phase == "" {
			errs = append(errs, fmt.Errorf("record of vm %s unreadable: no phase", r.ID))
		}
	}
	entries, err := os.ReadDir(stateDir)
	if err != nil {
		return append(errs, fmt.Errorf("read state directory: %w", err))
	}
	for _, e := range entries {
		if e.IsDir() && vmstate.ValidID(e.Name()) && !listed[e.Name()] {
			errs = append(errs, fmt.Errorf("vm directory %s without a record%s", e.Name(), contents(filepath.Join(stateDir, e.Name()))))
		}
	}
	return errs
}

// storeFile reports whether name is the store's log, snapshot or lock.
func storeFile(name string) bool { return strings.HasPrefix(name, "records.") || name == "lock" }

// tearLog appends half an entry to each of the store's logs in stateDir,
// as a kill in the middle of a write leaves it.
func tearLog(t *testing.T, stateDir string) {
	t.Helper()
	logs, _ := filepath.Glob(filepath.Join(stateDir, "records.*.log"))
	if len(logs) == 0 {
		t.Fatal("no log to tear")
	}
	for _, l := range logs {
		f, err := os.OpenFile(l, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.Write([]byte{40, 0, 0, 0, 1, 2, 3, 4, 'r', '{', '"', 'i'})
		f.Close()
	}
}

// checkLiveAddresses: no two records whose VM process lives hold one
// address.
func checkLiveAddresses(stateDir string, live map[string][]int) []error {
	recs, err := vmstate.ReadRecords(stateDir)
	if err != nil {
		return []error{err}
	}
	var errs []error
	held := map[string]string{}
	for _, r := range recs {
		if len(live[r.ID]) == 0 || r.Address == "" {
			continue
		}
		if other, ok := held[r.Address]; ok {
			errs = append(errs, fmt.Errorf("address %s recorded for live vms %s and %s", r.Address, other, r.ID))
		}
		held[r.Address] = r.ID
	}
	return errs
}

// checkRecovered checks what a run holds once Recover has returned (v),
// against the state directory, the live VM processes and the forge's
// runners, all held still meanwhile.
func checkRecovered(v crashView, stateDir string, live map[string][]int, runners []forgeRunner, owner forge.Owner) []error {
	var errs []error
	if v.RecoverErr != "" {
		errs = append(errs, fmt.Errorf("recover: %s", v.RecoverErr))
	}
	vms := map[string]vmstate.Record{}
	names, pending := map[string]bool{}, map[string]bool{}
	addrs := map[string]string{}
	for _, r := range v.VMs {
		vms[r.ID] = r
		names[r.RunnerName] = true
		if r.Address == "" {
			errs = append(errs, fmt.Errorf("adopted vm %s holds no address", r.ID))
		} else if other, ok := addrs[r.Address]; ok {
			errs = append(errs, fmt.Errorf("address %s held by adopted vms %s and %s", r.Address, other, r.ID))
		}
		addrs[r.Address] = r.ID
		if pids := live[r.ID]; len(pids) != 1 || pids[0] != r.PID {
			errs = append(errs, fmt.Errorf("adopted vm %s (pid %d): its live processes are %v", r.ID, r.PID, pids))
		}
	}
	for _, n := range v.Pending {
		pending[n] = true
	}
	for id, pids := range live {
		if _, ok := vms[id]; !ok {
			errs = append(errs, fmt.Errorf("process %v of vm %s lives, neither adopted nor killed", pids, id))
		}
	}
	entries, err := os.ReadDir(stateDir)
	if err != nil {
		return append(errs, fmt.Errorf("read state directory: %w", err))
	}
	recs, err := vmstate.ReadRecords(stateDir)
	if err != nil {
		return append(errs, err)
	}
	listed := map[string]bool{}
	for _, r := range recs {
		listed[r.ID] = true
		_, adopted := vms[r.ID]
		switch {
		case adopted:
		case r.Phase == vmstate.Deregistering && pending[r.RunnerName]:
		default:
			errs = append(errs, fmt.Errorf("record of vm %s (phase %s) stays without a vm or a queued removal", r.ID, r.Phase))
		}
	}
	for _, e := range entries {
		if !listed[e.Name()] && !storeFile(e.Name()) {
			errs = append(errs, fmt.Errorf("%s left in the state directory%s", e.Name(), contents(filepath.Join(stateDir, e.Name()))))
		}
	}
	for id := range vms {
		if !listed[id] {
			errs = append(errs, fmt.Errorf("adopted vm %s has no record", id))
		}
	}
	for _, r := range runners {
		if owner.Owns(r.Name) && !names[r.Name] && !pending[r.Name] {
			errs = append(errs, fmt.Errorf("runner %s (id %s) at the forge: no live vm holds it and no removal is queued", r.Name, r.ID))
		}
	}
	return errs
}

// checkNothingLeft: after a drain, no VM process, nothing in the state
// directory and none of this host's runners at the forge.
func checkNothingLeft(stateDir string, live map[string][]int, runners []forgeRunner, owner forge.Owner) []error {
	var errs []error
	for id, pids := range live {
		errs = append(errs, fmt.Errorf("process %v of vm %s still runs", pids, id))
	}
	entries, err := os.ReadDir(stateDir)
	if err != nil {
		errs = append(errs, fmt.Errorf("read state directory: %w", err))
	}
	for _, e := range entries {
		if !storeFile(e.Name()) {
			errs = append(errs, fmt.Errorf("%s left in the state directory%s", e.Name(), contents(filepath.Join(stateDir, e.Name()))))
		}
	}
	if recs, err := vmstate.ReadRecords(stateDir); err != nil || len(recs) != 0 {
		errs = append(errs, fmt.Errorf("records left: %v, %v", recs, err))
	}
	for _, r := range runners {
		if owner.Owns(r.Name) {
			errs = append(errs, fmt.Errorf("runner %s (id %s) left at the forge", r.Name, r.ID))
		}
	}
	return errs
}

// contents names what a directory holds, for a message.
func contents(dir string) string {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return ""
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return fmt.Sprintf(" (holding %v)", names)
}

func countRecords(stateDir string) int {
	recs, _ := vmstate.ReadRecords(stateDir)
	return len(recs)
}

func violations(dir string) []error {
	b, err := os.ReadFile(violationsOf(dir))
	if err != nil {
		return nil
	}
	var errs []error
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		errs = append(errs, errors.New(l))
	}
	return errs
}

func checkOrFail(t *testing.T, c *orchestrator, when string, errs []error) {
	t.Helper()
	if race := c.log(); strings.Contains(race, "DATA RACE") {
		t.Fatalf("%s: the orchestrator found a data race:\n%s", when, c.logTail())
	}
	if len(errs) == 0 {
		return
	}
	for _, err := range errs {
		t.Errorf("%s: %v", when, err)
	}
	t.Fatalf("%s: %d violation(s); orchestrator log:\n%s", when, len(errs), c.logTail())
}

func mustLive(t *testing.T, dir string) map[string][]int {
	t.Helper()
	live, err := liveGuests(dir)
	if err != nil {
		t.Fatal(err)
	}
	return live
}

func signalGuests(dir string, sig syscall.Signal) {
	live, _ := liveGuests(dir)
	for _, pids := range live {
		for _, pid := range pids {
			_ = syscall.Kill(pid, sig)
		}
	}
}

func killAllGuests(dir string) {
	signalGuests(dir, syscall.SIGKILL)
	signalGuests(dir, syscall.SIGCONT)
}

func touch(t *testing.T, path string) {
	t.Helper()
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
}

// orchestrator is one run of the orchestrator child.
type orchestrator struct {
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	err     error
}

func startOrchestrator(t *testing.T, self, dir, forgeURL string, run int, final bool) *orchestrator {
	t.Helper()
	logPath := filepath.Join(dir, fmt.Sprintf("orchestrator-%d.log", run))
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(self, "-test.run=^TestCrashLoop$")
	finalEnv := "0"
	if final {
		finalEnv = "1"
	}
	cmd.Env = append(os.Environ(), envRole+"=orchestrator", envDir+"="+dir, envForge+"="+forgeURL,
		envRun+"="+strconv.Itoa(run), envFinal+"="+finalEnv)
	// Files, not pipes: the VMs it starts must not hold its output open.
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	o := &orchestrator{cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() { o.err = cmd.Wait(); close(o.done) }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-o.done })
	return o
}

func (o *orchestrator) kill(t *testing.T) {
	t.Helper()
	_ = o.cmd.Process.Signal(syscall.SIGKILL)
	if err := o.wait(30 * time.Second); err == nil {
		t.Fatalf("the orchestrator exited before it was killed\n%s", o.logTail())
	}
}

// wait is the run's exit status, within d.
func (o *orchestrator) wait(d time.Duration) error {
	select {
	case <-o.done:
		return o.err
	case <-time.After(d):
		return fmt.Errorf("orchestrator still runs after %s", d)
	}
}

func (o *orchestrator) log() string {
	b, _ := os.ReadFile(o.logPath)
	return string(b)
}

func (o *orchestrator) logTail() string {
	s := o.log()
	if len(s) > 8000 {
		s = "…" + s[len(s)-8000:]
	}
	return s
}

// waitView waits for the run's account of what it recovered; the
// deadline is generous: the machine may be loaded.
func waitView(t *testing.T, o *orchestrator, dir string, run int) crashView {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		b, err := os.ReadFile(viewOf(dir, run))
		if err == nil {
			var v crashView
			if err := json.Unmarshal(b, &v); err != nil {
				t.Fatalf("run %d: view: %v", run, err)
			}
			return v
		}
		select {
		case <-o.done:
			t.Fatalf("run %d ended before it recovered: %v\n%s", run, o.err, o.logTail())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("run %d: not recovered within a minute\n%s", run, o.logTail())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// crashForge is the forge, served to the orchestrator and its VMs: a
// queue kept full, runners that take one job each and go when it ends
// (ephemeral), and removals it may refuse (an outage).
type crashForge struct {
	mu         sync.Mutex
	runnersMap map[string]*forgeRunner
	queue      []string
	nextID     int
	nextJob    int
	outage     bool
	jobsRun    int
}

func newCrashForge() *crashForge { return &crashForge{runnersMap: map[string]*forgeRunner{}} }

func (f *crashForge) setOutage(on bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.outage = on
}

func (f *crashForge) runners() []forgeRunner {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]forgeRunner, 0, len(f.runnersMap))
	for _, r := range f.runnersMap {
		out = append(out, *r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func (f *crashForge) counts() (jobs, registered int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.jobsRun, f.nextID
}

func (f *crashForge) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	writeJSON := func(v any) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(v)
	}
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/jobs":
		for len(f.queue) < 3 { // load: always work waiting
			f.nextJob++
			f.queue = append(f.queue, fmt.Sprintf("job-%d", f.nextJob))
		}
		writeJSON(f.queue)
	case r.Method == http.MethodGet && r.URL.Path == "/runners":
		out := make([]forgeRunner, 0, len(f.runnersMap))
		for _, x := range f.runnersMap {
			out = append(out, *x)
		}
		writeJSON(out)
	case r.Method == http.MethodPost && r.URL.Path == "/runners":
		f.nextID++
		x := &forgeRunner{ID: strconv.Itoa(f.nextID), Name: r.FormValue("name")}
		f.runnersMap[x.ID] = x
		writeJSON(x)
	case r.Method == http.MethodDelete && strings.HasPrefix(r.URL.Path, "/runners/"):
		if f.outage {
			http.Error(w, "forge unavailable", http.StatusServiceUnavailable)
			return
		}
		delete(f.runnersMap, strings.TrimPrefix(r.URL.Path, "/runners/"))
		w.WriteHeader(http.StatusNoContent)
	case r.Method == http.MethodPost && r.URL.Path == "/take":
		for _, x := range f.runnersMap {
			if x.Name == r.FormValue("name") && !x.Busy && len(f.queue) > 0 {
				x.Busy, x.Job = true, f.queue[0]
				f.queue = f.queue[1:]
				_, _ = w.Write([]byte(x.Job))
				return
			}
		}
		w.WriteHeader(http.StatusNoContent)
	case r.Method == http.MethodPost && r.URL.Path == "/finish":
		for id, x := range f.runnersMap {
			if x.Name == r.FormValue("name") && x.Job == r.FormValue("job") {
				delete(f.runnersMap, id)
				f.jobsRun++
			}
		}
		w.WriteHeader(http.StatusNoContent)
	default:
		http.NotFound(w, r)
	}
}
