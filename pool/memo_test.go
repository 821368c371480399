package pool

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
	"github.com/nixos-fireactions/nixos-fireactions/config"
	"github.com/nixos-fireactions/nixos-fireactions/forge"
	"github.com/nixos-fireactions/nixos-fireactions/internal/hosttest"
	"github.com/nixos-fireactions/nixos-fireactions/vmm"
	"github.com/nixos-fireactions/nixos-fireactions/vmstate"
)

// forgeSide is what a forge holds of the runners, which outlives the
// orchestrator: the credential it accepts of each runner, by runner id.
type forgeSide struct {
	mu     sync.Mutex
	tokens map[string]string
}

func (s *forgeSide) set(id, tok string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokens[id] = tok
}

func (s *forgeSide) get(id string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	tok, ok := s.tokens[id]
	return tok, ok
}

// credForge is the fake forge as the Gitea driver: each runner has its
// own credential, which Register hands back in the runner's memo and the
// driver keeps nowhere else, and with which alone a runner's job can be
// failed (Gitea's runner protocol: UpdateTask with the runner's uuid and
// token).
type credForge struct {
	*fakeForge
	side *forgeSide
}

func (f *credForge) Register(ctx context.Context, spec forge.RunnerSpec) (*forge.Runner, error) {
	r, err := f.fakeForge.Register(ctx, spec)
	if err != nil {
		return nil, err
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	tok := "RUNNER-OWN-SECRET-" + hex.EncodeToString(b[:])
	f.side.set(r.ID, tok)
	r.Memo = forge.RunnerMemo(tok)
	r.Guest.Files = []agentproto.File{{Path: "/home/runner/.runner", Mode: 0o600, Content: []byte(tok)}}
	return r, nil
}

func (f *credForge) FailJob(ctx context.Context, r forge.RunnerRef, job, reason string) error {
	if r.Memo == "" {
		return fmt.Errorf("fail job %q of runner %s: %w", job, r.Name, forge.ErrNoCredential)
	}
	if want, ok := f.side.get(r.ID); !ok || string(r.Memo) != want {
		return fmt.Errorf("fail job %q of runner %s: unauthenticated", job, r.Name)
	}
	return f.fakeForge.FailJob(ctx, r, job, reason)
}

// restartFixture is the first run's VM, busy with its job, as a crash
// left it: its record as the first run wrote it, in the state directory
// the next run opens, and the forge's side.
type restartFixture struct {
	dir string         // the state directory
	rec vmstate.Record // the VM's record on disk at the crash
}

// runUntilBusyAndCrash runs a first orchestrator over dir until its VM is
// busy with job j1 on disk, and then leaves that VM's record as the crash
// would: the first run's teardown (its drain) is what a crash never does,
// so the record's bytes are put back after it.
func runUntilBusyAndCrash(t *testing.T, dir string, log *slog.Logger, noBusyFlag bool, wrap func(*fakeForge) forge.Forge) (restartFixture, *writeCounter) {
	t.Helper()
	learns := false // a JobLearner's memo is saved after the busy record
	if wrap != nil {
		inner := wrap
		wrap = func(f *fakeForge) forge.Forge {
			g := inner(f)
			_, learns = g.(forge.JobLearner)
			return g
		}
	}
	first := newHarnessAt(t, dir, 0, 1, guestRunsOneJob, func(p *config.Pool) { p.Timeouts.Job = time.Hour }, log, nil, wrap)
	first.hv.jobTime = time.Hour // busy until its drain
	first.forge.mu.Lock()
	first.forge.noBusyFlag = noBusyFlag
	first.forge.mu.Unlock()
	c := countWrites(first.store)
	first.forge.enqueue("j1")
	var rec vmstate.Record
	eventually(t, 20*time.Second, "the VM busy with j1 on disk", func() bool {
		for _, r := range diskRecords(t, first.store) {
			if r.Phase == vmstate.Busy && r.Job == "j1" && (!learns || r.RunnerMemo != "") {
				rec = r
				return true
			}
		}
		return false
	})
	saved := rec
	_ = first.drain(t, 0) // ends the busy VM: "drain grace period ended"
	// The crash: the process's end releases the store (its lock), and the
	// busy record is back on disk as it was, written by a store of its own
	// (not counted as one of the VM's writes).
	first.store.Close()
	back, err := vmstate.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := back.Create(&saved); err != nil {
		t.Fatal(err)
	}
	back.Close()
	return restartFixture{dir: dir, rec: rec}, c
}

// restart is the next run over the fixture's state directory: a new
// Manager with the forge's side as the crash left it (the VM's runner,
// busy with j1), which Recover adopts the VM into; the VM's monitor is
// machine.
func restart(t *testing.T, fx restartFixture, log *slog.Logger, wrap func(*fakeForge) forge.Forge, runnerAtForge bool) (*harness, *fakeMachine) {
	t.Helper()
	h := newHarnessAt(t, fx.dir, 0, 1, guestRunsOneJob, func(p *config.Pool) { p.Timeouts.Job = time.Hour }, log, nil, wrap)
	h.stop()
	<-h.done
	if runnerAtForge { // else retired: deleted at the forge, as GitLab's are
		h.forge.runners[fx.rec.RunnerID] = &fakeRunner{ref: forgeRef(fx.rec.RunnerID, fx.rec.RunnerName), busy: true, job: "j1"}
	}
	h.net.TAPs[fx.rec.TAP] = true
	machine := &fakeMachine{done: make(chan struct{}), kill: make(chan struct{})}
	t.Cleanup(func() {
		select {
		case <-machine.done:
		default:
			close(machine.done)
		}
	})
	err := h.m.Recover(context.Background(), Leftovers{
		Adopt: func(id string, pid int) (vmm.Machine, error) { return machine, nil },
		KillVM: func(_ context.Context, id string, pid int) error {
			t.Errorf("killed %s/%d instead of adopting it", id, pid)
			return nil
		},
		TAPs: func() ([]string, error) { return []string{fx.rec.TAP}, nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := h.m.VM(fx.rec.ID); err != nil || got.Phase != vmstate.Busy {
		t.Fatalf("adopted vm: %+v, %v; want busy", got, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.stop, h.done = cancel, make(chan struct{})
	go func() { h.m.Run(ctx); close(h.done) }()
	return h, machine
}

// runnerDies is the adopted VM's runner dying of its job: exit code 2,
// then the guest powers off.
func runnerDies(t *testing.T, h *harness, fx restartFixture, machine *fakeMachine) {
	t.Helper()
	if err := h.m.Report(fx.rec.AgentToken, agentproto.Report{VMID: fx.rec.ID, Event: agentproto.EventRunnerExited, ExitCode: 2}); err != nil {
		t.Fatal(err)
	}
	close(machine.done)
	eventually(t, 20*time.Second, "the adopted VM gone", func() bool { return len(h.m.VMs()) == 0 })
}

// Issue 24: a VM adopted after a restart whose runner then dies of its
// job has the job failed at the forge at once, as before the restart: the
// Gitea driver speaks for the dead runner with the runner's own
// credential, which travelled from Register through the runner's memo in
// the VM's record (write 2, no extra write) to the next run. The record
// holding it is its owner's only (log 0600, directory 0700) and the
// credential reaches no log line of either run.
func TestAdoptedVMsJobIsFailedAtTheForgeWithTheRunnersOwnCredential(t *testing.T) {
	logs := &hosttest.SyncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	side := &forgeSide{tokens: map[string]string{}}
	wrap := func(f *fakeForge) forge.Forge { return &credForge{fakeForge: f, side: side} }
	fx, c := runUntilBusyAndCrash(t, filepath.Join(t.TempDir(), "vms"), log, false, wrap)
	secret, ok := side.get(fx.rec.RunnerID)
	if !ok {
		t.Fatal("the forge holds no credential of the runner")
	}
	if fx.rec.RunnerMemo != secret {
		t.Fatalf("the busy record's runner memo %q, want the runner's credential %q", fx.rec.RunnerMemo, secret)
	}
	c.mu.Lock()
	// At most 4 writes when the busy phase and the job's id come
	// together, 5 when the job's id follows (docs/performance.md, the
	// writes of a VM's life): the memo adds none.
	if n := c.byVM[fx.rec.ID]; n > 5 {
		t.Errorf("the VM's record written %d times before its job ran (%v), want at most 5", n, c.phases[fx.rec.ID])
	}
	c.mu.Unlock()

	h, machine := restart(t, fx, log, wrap, true)
	if got, _ := h.m.VM(fx.rec.ID); got.RunnerMemo != "" {
		t.Errorf("the API's record shows the runner's memo %q", got.RunnerMemo)
	}
	runnerDies(t, h, fx, machine)
	if got := h.forge.failedJobs()["j1"]; got != "runner exit code 2" {
		t.Fatalf("job j1 failed at the forge with %q, want %q (failed jobs %v)", got, "runner exit code 2", h.forge.failedJobs())
	}
	if !strings.Contains(logs.String(), "level=WARN msg=\"job failed at the forge\"") {
		t.Errorf("no WARN line says the job was failed:\n%s", logs.String())
	}
	h.assertNothingLeft(t)

	// The credential never reached a log line: the scan sees it where it
	// is (a positive control on the record's own bytes), and not in the
	// logs of either run.
	raw, err := json.Marshal(fx.rec) // the record's own bytes (fmt redacts it)
	if err != nil {
		t.Fatal(err)
	}
	if !containsSecret(string(raw), secret) {
		t.Fatal("control: the scan does not see the credential in the record")
	}
	if containsSecret(logs.String(), secret) {
		t.Fatalf("the runner's credential is in the log:\n%s", logs.String())
	}
}

// containsSecret is the log scan: the secret, or its distinctive part.
func containsSecret(s, secret string) bool {
	return strings.Contains(s, secret) || strings.Contains(s, strings.TrimPrefix(secret, "RUNNER-OWN-SECRET-"))
}

// Issue 24: the record that holds the runner's memo (its own credential)
// is readable by its owner only: the file 0600, its VM's directory and
// the state directory 0700, all the orchestrator's.
func TestTheRecordHoldingARunnersCredentialIsItsOwnersOnly(t *testing.T) {
	side := &forgeSide{tokens: map[string]string{}}
	dir := filepath.Join(t.TempDir(), "vms")
	h := newHarnessAt(t, dir, 0, 1, guestRunsOneJob, func(p *config.Pool) { p.Timeouts.Job = time.Hour }, slog.New(slog.NewTextHandler(io.Discard, nil)), nil,
		func(f *fakeForge) forge.Forge { return &credForge{fakeForge: f, side: side} })
	h.hv.jobTime = time.Hour
	h.forge.enqueue("j1")
	var rec vmstate.Record
	eventually(t, 20*time.Second, "a record holding the runner's memo on disk", func() bool {
		for _, r := range diskRecords(t, h.store) {
			if r.RunnerMemo != "" {
				rec = r
				return true
			}
		}
		return false
	})
	logs, _ := filepath.Glob(filepath.Join(dir, "records.*"))
	if len(logs) == 0 {
		t.Fatal("no log of records in the state directory")
	}
	modes := map[string]os.FileMode{
		dir:                 0o700 | os.ModeDir,
		h.store.Dir(rec.ID): 0o700 | os.ModeDir,
	}
	var b []byte
	for _, l := range logs {
		modes[l] = 0o600
		content, err := os.ReadFile(l)
		if err != nil {
			t.Fatal(err)
		}
		b = append(b, content...)
	}
	for path, want := range modes {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != want {
			t.Errorf("%s: mode %v, want %v", path, fi.Mode(), want)
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); !ok || int(st.Uid) != os.Geteuid() {
			t.Errorf("%s: not owned by the orchestrator's user %d", path, os.Geteuid())
		}
	}
	if !strings.Contains(string(b), rec.RunnerMemo) {
		t.Fatal("control: the log does not hold the memo; the modes prove nothing")
	}
	if strings.Contains(string(b), h.forge.secret) {
		t.Fatal("the record holds the forge's scope-wide credential")
	}
}

// learnForge is the fake forge as the GitLab driver: a runner is retired
// (deleted) once its job started, after which the forge no longer says
// which runner ran a job; LearnJob, asked before, returns the runner's
// job in its memo, and FailJob cancels the job its memo names, never
// another.
type learnForge struct {
	*fakeForge
	lmu     sync.Mutex
	learnt  int // LearnJob calls
	retired int // Retire calls that deleted a runner
}

const memoJobsPrefix = "jobs:"

func (f *learnForge) LearnJob(_ context.Context, r forge.RunnerRef) (forge.RunnerMemo, error) {
	if strings.HasPrefix(string(r.Memo), memoJobsPrefix) {
		return r.Memo, nil // learnt already, as the GitLab driver answers
	}
	f.lmu.Lock()
	f.learnt++
	f.lmu.Unlock()
	f.mu.Lock()
	defer f.mu.Unlock()
	fr, ok := f.runners[r.ID]
	if !ok {
		return r.Memo, fmt.Errorf("runner %s: 404", r.Name)
	}
	return forge.RunnerMemo(memoJobsPrefix + fr.job), nil
}

func (f *learnForge) Retire(_ context.Context, r forge.RunnerRef) error {
	f.mu.Lock()
	_, present := f.runners[r.ID]
	delete(f.runners, r.ID)
	f.mu.Unlock()
	if present {
		f.lmu.Lock()
		f.retired++
		f.lmu.Unlock()
	}
	return nil
}

func (f *learnForge) FailJob(_ context.Context, r forge.RunnerRef, job, reason string) error {
	learnt, ok := strings.CutPrefix(string(r.Memo), memoJobsPrefix)
	f.mu.Lock()
	defer f.mu.Unlock()
	if !ok {
		if fr, present := f.runners[r.ID]; present && fr.job != "" { // not retired yet: ask
			learnt, ok = fr.job, true
		}
	}
	if !ok {
		return fmt.Errorf("runner %s retired before its job was learnt: %w", r.Name, forge.ErrNoCredential)
	}
	f.failed[learnt] = reason // cancelled: GitLab's only end from outside
	return nil
}

func (f *learnForge) counts() (learnt, retired int) {
	f.lmu.Lock()
	defer f.lmu.Unlock()
	return f.learnt, f.retired
}

// Issue 24: a GitLab-like forge (no busy flag; the runner retired once
// its job started, after which the forge no longer ties the job to it).
// The job the driver learnt before the retirement goes to disk after the
// VM's busy record (write 4), in one more write (at most 5: a JobLearner
// is asked only once the busy record is on disk), so a VM adopted
// after a restart whose runner dies has that job cancelled at the forge,
// as before the restart, and no other.
func TestAdoptedVMsJobLearntBeforeRetirementIsCancelledAfterARestart(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	fx, c := runUntilBusyAndCrash(t, filepath.Join(t.TempDir(), "vms"), log, true,
		func(f *fakeForge) forge.Forge { return &learnForge{fakeForge: f} })
	if fx.rec.RunnerMemo != memoJobsPrefix+"j1" {
		t.Fatalf("the busy record's runner memo %q, want the job learnt, %q", fx.rec.RunnerMemo, memoJobsPrefix+"j1")
	}
	c.checkAtMost(t, 1, 5) // the learnt memo's save is the fifth write

	// The next run's forge has no runner of the VM: retired (deleted)
	// before the crash, the forge no longer ties the job to it.
	var after *learnForge
	h, machine := restart(t, fx, log, func(f *fakeForge) forge.Forge { after = &learnForge{fakeForge: f}; return after }, false)
	h.forge.mu.Lock()
	h.forge.runners["99"] = &fakeRunner{ref: forgeRef("99", "someone-else"), busy: true, job: "j2"} // another runner's job
	h.forge.mu.Unlock()
	runnerDies(t, h, fx, machine)
	if got := h.forge.failedJobs(); len(got) != 1 || got["j1"] != "runner exit code 2" {
		t.Fatalf("jobs cancelled at the forge: %v, want j1 only, with %q", got, "runner exit code 2")
	}
	if learnt, _ := after.counts(); learnt != 0 {
		t.Errorf("the next run asked the forge of the job %d times: the memo held it", learnt)
	}
}

// blockingLearner is a JobLearner whose LearnJob waits until released.
type blockingLearner struct {
	*fakeForge
	entered chan struct{} // closed when LearnJob is called
	release chan struct{} // LearnJob answers once it is closed
	once    sync.Once
}

func (f *blockingLearner) LearnJob(ctx context.Context, r forge.RunnerRef) (forge.RunnerMemo, error) {
	f.once.Do(func() { close(f.entered) })
	select {
	case <-f.release:
	case <-ctx.Done():
		return r.Memo, ctx.Err()
	}
	return forge.RunnerMemo(memoJobsPrefix + "j1"), nil
}

// A forge with no busy flag whose driver learns the job (GitLab): the
// VM's busy record is on disk while LearnJob is still waiting for the
// forge, so a crash then adopts the VM as busy, not idle; the memo
// follows once it answers.
func TestTheBusyRecordIsOnDiskWhileTheForgeIsAskedOfTheJob(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	l := &blockingLearner{entered: make(chan struct{}), release: make(chan struct{})}
	h := newHarnessAt(t, filepath.Join(t.TempDir(), "vms"), 0, 1, guestRunsOneJob, func(p *config.Pool) { p.Timeouts.Job = time.Hour }, log, nil,
		func(f *fakeForge) forge.Forge { l.fakeForge = f; return l })
	h.hv.jobTime = time.Hour
	h.forge.mu.Lock()
	h.forge.noBusyFlag = true
	h.forge.mu.Unlock()
	released := false
	defer func() {
		if !released {
			close(l.release)
		}
	}()
	h.forge.enqueue("j1")
	select {
	case <-l.entered:
	case <-time.After(20 * time.Second):
		t.Fatal("LearnJob not called")
	}
	busyOnDisk := func() (vmstate.Record, bool) {
		for _, r := range diskRecords(t, h.store) {
			if r.Phase == vmstate.Busy {
				return r, true
			}
		}
		return vmstate.Record{}, false
	}
	// LearnJob is blocked: the busy record must be on disk already.
	time.Sleep(50 * time.Millisecond)
	if r, ok := busyOnDisk(); !ok {
		t.Fatalf("while LearnJob is blocked the record on disk is not busy: %v", diskRecords(t, h.store))
	} else if r.RunnerMemo != "" {
		t.Fatalf("memo %q on disk before LearnJob answered", r.RunnerMemo)
	}
	close(l.release)
	released = true
	eventually(t, 20*time.Second, "the learnt memo on disk", func() bool {
		r, ok := busyOnDisk()
		return ok && r.RunnerMemo == memoJobsPrefix+"j1"
	})
}
