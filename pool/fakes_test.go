package pool

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
	"github.com/nixos-fireactions/nixos-fireactions/forge"
	"github.com/nixos-fireactions/nixos-fireactions/internal/hosttest"
	"github.com/nixos-fireactions/nixos-fireactions/vmm"
)

// fakeForge is an in-memory forge: a queue of jobs, runners that take at
// most one job each and disappear after it (ephemeral), as Gitea does.
type fakeForge struct {
	mu       sync.Mutex
	queue    []forge.Job
	runners  map[string]*fakeRunner // by id
	nextID   int
	secret   string // the scope-wide credential; must never reach a guest
	removed  []string
	failReg  bool
	hold     bool              // runners find no job (jobs stay queued)
	finished map[string]string // job id -> runner name that ran it
	taken    map[string]string // job id -> runner name that took it

	// removeErr, when set, is every Remove's answer (the forge is
	// unreachable): the runner stays.
	removeErr error
	// onRemove, when set, is called as each Remove starts.
	onRemove func(forge.RunnerRef)
	// onRegister, when set before the pool starts, is called as each
	// Register starts.
	onRegister func(forge.RunnerSpec)
	failed     map[string]string // job id -> reason, by FailJob
	// noBusyFlag: the runner list says nothing of a runner's job, as
	// GitLab's does not.
	noBusyFlag bool
	// listDelay, when set before the pool starts, is how long each
	// runner listing takes (a real forge's round trip).
	listDelay time.Duration
	// runnersErr, when set, is every runner listing's answer.
	runnersErr error
}

type fakeRunner struct {
	ref  forge.RunnerRef
	busy bool
	job  string
}

func newFakeForge() *fakeForge {
	return &fakeForge{runners: map[string]*fakeRunner{}, secret: "SCOPE-WIDE-SECRET", finished: map[string]string{}, taken: map[string]string{}, failed: map[string]string{}}
}

func (f *fakeForge) Kind() string { return "fake" }

func (f *fakeForge) enqueue(ids ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, id := range ids {
		f.queue = append(f.queue, forge.Job{ID: id, Labels: []string{"linux"}})
	}
}

func (f *fakeForge) QueuedJobs(context.Context) ([]forge.Job, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]forge.Job(nil), f.queue...), nil
}

func (f *fakeForge) Register(_ context.Context, spec forge.RunnerSpec) (*forge.Runner, error) {
	if f.onRegister != nil {
		f.onRegister(spec)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failReg {
		return nil, errors.New("forge down")
	}
	f.nextID++
	ref := forge.RunnerRef{ID: fmt.Sprint(f.nextID), Name: spec.Name}
	f.runners[ref.ID] = &fakeRunner{ref: ref}
	return &forge.Runner{RunnerRef: ref, Guest: agentproto.Runner{
		Forge: "fake", User: spec.Guest.User, Command: []string{"runner"},
		Files: []agentproto.File{{Path: "/home/runner/cred", Content: []byte("own-credential-" + ref.ID)}},
	}}, nil
}

func (f *fakeForge) Runners(ctx context.Context, owner forge.Owner) ([]forge.RunnerState, error) {
	if f.listDelay > 0 {
		select {
		case <-time.After(f.listDelay):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.runnersErr != nil {
		return nil, f.runnersErr
	}
	var out []forge.RunnerState
	for _, r := range f.runners {
		if owner.Owns(r.ref.Name) {
			out = append(out, forge.RunnerState{RunnerRef: r.ref, Online: true, Busy: r.busy && !f.noBusyFlag})
		}
	}
	return out, nil
}

func (f *fakeForge) Remove(_ context.Context, r forge.RunnerRef) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.onRemove != nil {
		f.onRemove(r)
	}
	if f.removeErr != nil {
		return f.removeErr
	}
	delete(f.runners, r.ID)
	f.removed = append(f.removed, r.ID)
	return nil
}

// FailJob fails the job, as Gitea does: only while the runner exists
// (its credential dies with it), and only the runner's own job.
func (f *fakeForge) FailJob(_ context.Context, r forge.RunnerRef, job, reason string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	fr, ok := f.runners[r.ID]
	if !ok {
		return fmt.Errorf("runner %s is gone: no credential to fail job %q with", r.Name, job)
	}
	if fr.job != job {
		return fmt.Errorf("job %q is not runner %s's", job, r.Name)
	}
	f.failed[job] = reason
	return nil
}

func (f *fakeForge) failedJobs() map[string]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps.Clone(f.failed)
}

// runnerOf is the name of the runner that took job id ("" if none did).
func (f *fakeForge) runnerOf(id string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.taken[id]
}

// take gives the runner the first queued job, as a runner polling does.
func (f *fakeForge) take(runnerName string) (string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.queue) == 0 || f.hold {
		return "", false
	}
	for _, r := range f.runners {
		if r.ref.Name == runnerName {
			j := f.queue[0]
			f.queue = f.queue[1:]
			r.busy, r.job = true, j.ID
			f.taken[j.ID] = runnerName
			return j.ID, true
		}
	}
	return "", false
}

// finish ends a job; the ephemeral runner is removed by the forge.
func (f *fakeForge) finish(runnerName, jobID string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.finished[jobID] = runnerName
	for id, r := range f.runners {
		if r.ref.Name == runnerName {
			delete(f.runners, id)
		}
	}
}

func (f *fakeForge) runnerCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.runners)
}

// retiringForge is the fake forge as a forge.Retirer: it records each
// retirement with what the forge looked like at that moment.
type retiringForge struct {
	*fakeForge
	rmu     sync.Mutex
	retired []retirement
}

type retirement struct {
	ref           forge.RunnerRef
	runnerPresent bool // the runner was still at the forge
	jobRunning    bool // its job had been taken and not finished
}

func (f *retiringForge) Retire(_ context.Context, r forge.RunnerRef) error {
	f.mu.Lock()
	x, present := f.runners[r.ID]
	running := present && x.busy
	delete(f.runners, r.ID)
	f.mu.Unlock()
	f.rmu.Lock()
	defer f.rmu.Unlock()
	f.retired = append(f.retired, retirement{ref: r, runnerPresent: present, jobRunning: running})
	return nil
}

func (f *retiringForge) retirements() []retirement {
	f.rmu.Lock()
	defer f.rmu.Unlock()
	return append([]retirement(nil), f.retired...)
}

// guestBehaviour is what a fake guest does once started.
type guestBehaviour int

const (
	guestRunsOneJob guestBehaviour = iota // ready, takes one job, exits 0
	guestCrashes                          // monitor exits at once
	guestHangs                            // never reports
	guestNoStart                          // Start fails
	// Start fails and its monitor's kill too: Start returns that monitor
	// (unkillable) with its error, as vmm.Hypervisor says.
	guestNoStartNorKill
)

// fakeHV starts fake guests that talk to the manager like the real agent.
type fakeHV struct {
	m        *Manager
	boot     *hosttest.Boot
	forge    *fakeForge
	behave   guestBehaviour
	jobTime  time.Duration
	mu       sync.Mutex
	started  int
	running  int
	maxAlive int
	specs    []vmm.Spec // every spec started, in order
	// initrds is each VM's initramfs as Start found it, by VM id (nil:
	// no such file).
	initrds  map[string][]byte
	machines []*fakeMachine // every machine started, in order
	// failedBeforeOff are the jobs the host failed while their guest was
	// still up after the runner died.
	failedBeforeOff []string
	warmFake
}

func (h *fakeHV) Name() string { return "fake" }

func (h *fakeHV) Start(_ context.Context, spec vmm.Spec) (vmm.Machine, error) {
	h.mu.Lock()
	h.specs = append(h.specs, spec)
	if h.initrds == nil {
		h.initrds = map[string][]byte{}
	}
	h.initrds[spec.ID], _ = os.ReadFile(spec.Initramfs)
	if spec.Identity != "" && h.failing(map[bool]string{true: "restore-start-unkillable", false: "template-start-unkillable"}[spec.Restore != ""]) {
		h.mu.Unlock()
		return &unkillable{}, errors.New("monitor would not start, and its kill failed")
	}
	if err := h.startWarm(spec); err != nil {
		h.mu.Unlock()
		return nil, err
	}
	if h.behave == guestNoStart {
		h.mu.Unlock()
		return nil, errors.New("monitor would not start")
	}
	if h.behave == guestNoStartNorKill {
		h.mu.Unlock()
		return &unkillable{}, errors.New("monitor would not start, and its kill failed")
	}
	h.started++
	h.running++
	h.maxAlive = max(h.maxAlive, h.running)
	h.mu.Unlock()
	fm := &fakeMachine{done: make(chan struct{}), kill: make(chan struct{}), hv: h, spec: spec}
	h.mu.Lock()
	h.machines = append(h.machines, fm)
	h.mu.Unlock()
	cfg := h.boot.Config(spec.ID)
	if spec.Identity != "" {
		fm.identity = make(chan agentproto.Identity, 1)
	}
	go func() {
		defer func() {
			h.mu.Lock()
			h.running--
			h.mu.Unlock()
			close(fm.done)
		}()
		if spec.Identity != "" {
			// A template (see warmfake_test.go) or a restore of one:
			// the guest waits for its identity.
			id, ok := fm.waitIdentity()
			if !ok {
				return
			}
			cfg = id.Config
		}
		report := func(ev agentproto.Event, code int) {
			_ = h.m.Report(cfg.Report.Token, agentproto.Report{VMID: cfg.VMID, Event: ev, ExitCode: code})
		}
		switch h.behave {
		case guestCrashes:
			fm.err = errors.New("monitor crashed")
			return
		case guestHangs:
			<-fm.kill
			fm.err = vmm.ErrKilled
			return
		}
		report(agentproto.EventBooted, 0)
		report(agentproto.EventRunnerReady, 0)
		for {
			if id, ok := h.forge.take(runnerNameOf(h, cfg)); ok {
				if strings.HasPrefix(id, dyingJob) {
					_ = h.m.Report(cfg.Report.Token, agentproto.Report{VMID: cfg.VMID, Event: agentproto.EventJobStarted, Job: id})
					report(agentproto.EventRunnerExited, 2)
					// The guest takes its time to power off (a job's
					// leftovers slow it): up to a second, or until the
					// host failed the job.
					for end := time.Now().Add(time.Second); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
						if _, ok := h.forge.failedJobs()[id]; ok {
							h.mu.Lock()
							h.failedBeforeOff = append(h.failedBeforeOff, id)
							h.mu.Unlock()
							break
						}
					}
					return
				}
				if !strings.HasPrefix(id, silentJob) {
					_ = h.m.Report(cfg.Report.Token, agentproto.Report{VMID: cfg.VMID, Event: agentproto.EventJobStarted, Job: id})
				}
				select {
				case <-time.After(h.jobTime):
				case <-fm.kill:
					fm.err = vmm.ErrKilled
					return
				}
				h.forge.finish(runnerNameOf(h, cfg), id)
				report(agentproto.EventRunnerExited, 0)
				return
			}
			select {
			case <-fm.kill:
				fm.err = vmm.ErrKilled
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	return fm, nil
}

// dyingJob starts the id of a job that kills its runner: the runner
// reports the job started, then exits 2 before the job ends.
const dyingJob = "dies-"

// silentJob starts the id of a job whose job-started report is lost: the
// runner runs it, the host hears nothing of it.
const silentJob = "silent-"

func runnerNameOf(h *fakeHV, cfg agentproto.Config) string { return h.m.Owner().RunnerName(cfg.VMID) }

type fakeMachine struct {
	done     chan struct{}
	kill     chan struct{}
	killOnce sync.Once
	err      error
	killErr  error        // every Kill's answer, once the monitor is done
	released atomic.Int32 // ReleaseBoot calls
	// Warm starts (warmfake_test.go): the hypervisor and spec it started
	// from, and the identity its guest waits for when the spec has an
	// identity channel.
	hv       *fakeHV
	spec     vmm.Spec
	identity chan agentproto.Identity
	resumed  atomic.Bool
	// identityTaken: an identity reached the guest, which takes no other.
	identityTaken atomic.Bool
}

// ReleaseBoot implements vmm.BootReleaser, as QEMU's machine does.
func (m *fakeMachine) ReleaseBoot() error {
	m.released.Add(1)
	return nil
}

func (m *fakeMachine) PID() int              { return 1 }
func (m *fakeMachine) Done() <-chan struct{} { return m.done }
func (m *fakeMachine) Err() error            { <-m.done; return m.err }
func (m *fakeMachine) Kill(context.Context) error {
	m.killOnce.Do(func() { close(m.kill) })
	<-m.done
	if m.killErr != nil {
		return m.killErr
	}
	if m.hv != nil && m.spec.Identity != "" && m.spec.Restore == "" && m.hv.templateKillFails.Load() {
		return errors.New("the template's monitor did not answer its kill")
	}
	if m.hv != nil && m.spec.Restore != "" && (m.hv.restoreKillFails.Load() || m.hv.restoreKillFailures.Add(-1) >= 0) {
		return errors.New("the restore's monitor did not answer its kill")
	}
	return nil
}
