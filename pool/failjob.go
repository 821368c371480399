package pool

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/forge"
	"github.com/nixos-fireactions/nixos-fireactions/vmstate"
)

// failJobTimeout bounds the forge calls that fail a job.
const failJobTimeout = 30 * time.Second

// jobIDPattern is what the host keeps of a job id a guest reports: short,
// and nothing a log line or a URL would have to escape.
var jobIDPattern = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// failJob tells the forge that the job the VM's runner took has failed,
// when the VM ended before its runner finished cleanly and the runner had
// taken a job. reason is what the job's log shows its readers: a class and
// a short message of the host's making (forgeReason), never a host error.
// It runs before the runner is removed: the driver speaks with the
// runner's own credential. Forges whose driver cannot fail a job wait for
// their own clean-up, which the log says.
// It fails a VM's job once at most.
func (v *vm) failJob(ctx context.Context, rec vmstate.Record, reason string) {
	if rec.RunnerID == "" || rec.Job == "" && rec.Busy.IsZero() {
		return // no runner, or it took no job
	}
	v.mu.Lock()
	done := v.jobFailed
	v.mu.Unlock()
	if done {
		return
	}
	reason = clipGuest(reason, maxForgeReasonBytes)
	log := v.log.With("runner", rec.RunnerName, "job", rec.Job)
	f, ok := v.pool.forge.(forge.JobFailer)
	var err error
	if ok {
		err = f.FailJob(ctx, runnerRef(rec), rec.Job, reason)
	}
	switch {
	case !ok || errors.Is(err, errors.ErrUnsupported):
		log.Warn("the forge's driver cannot fail a job: the forge fails it when its own clean-up finds the runner gone", "forge", v.pool.forge.Kind(), "reason", reason)
	case errors.Is(err, forge.ErrJobEnded):
		log.Info("job had ended at the forge already: left as it is", "reason", reason)
	case errors.Is(err, forge.ErrNoCredential):
		// The runner's memo lacks what the driver needs: GitLab's job
		// listing failed before the runner's retirement, or the record
		// was written by a version that kept no memo.
		log.Warn("job not failed at the forge: the runner's memo lacks what its driver needs (its credential, or the job it took); the forge ends the job when its own clean-up finds the runner gone", "reason", reason, "err", err)
	case err != nil:
		log.Error("fail the job at the forge", "reason", reason, "err", err)
		return
	default:
		log.Warn("job failed at the forge", "reason", reason)
	}
	v.setJobFailed()
}

// runnerRef is the VM's runner as its forge's driver knows it: with the
// memo the driver returned (Register, LearnJob), kept in the record.
func runnerRef(rec vmstate.Record) forge.RunnerRef {
	return forge.RunnerRef{ID: rec.RunnerID, Name: rec.RunnerName, Memo: forge.RunnerMemo(rec.RunnerMemo)}
}

// learnJobTimeout bounds a forge.JobLearner's call: the VM's goroutine
// waits for it (its busy record is on disk already).
const learnJobTimeout = 10 * time.Second

// learnJob asks a forge whose driver must learn of a runner's job while
// the forge still ties the job to the runner (forge.JobLearner: GitLab,
// before the runner's retirement) to do so, once the VM's job started
// and its busy record was saved (write 4: GitLab has no busy flag, so a
// crash during the call must find the record busy), and keeps the
// runner's memo it returns in the record, numbered when it changed: the
// caller's next save (a fifth write, JobLearner drivers only) takes it to
// disk, so a restart that adopts the VM can still fail the job. It runs
// on the VM's goroutine, before the runner is retired, once.
func (v *vm) learnJob() {
	if v.jobLearnt {
		return
	}
	l, ok := v.pool.forge.(forge.JobLearner)
	if !ok {
		return
	}
	rec := v.snapshot()
	if rec.RunnerID == "" {
		return
	}
	v.jobLearnt = true
	ctx, cancel := context.WithTimeout(context.Background(), learnJobTimeout)
	defer cancel()
	memo, err := l.LearnJob(ctx, runnerRef(rec))
	switch {
	case errors.Is(err, errors.ErrUnsupported):
		return // nothing to learn (a wrapper of a driver that is no JobLearner)
	case err != nil:
		v.log.Warn("learn the runner's job at the forge: if the runner dies, its job is failed only while this run holds what the retirement learns", "runner", rec.RunnerName, "err", err)
		return
	}
	if string(memo) != rec.RunnerMemo {
		v.change(func(r *vmstate.Record) { r.RunnerMemo = string(memo) })
	}
}

// maxForgeReasonBytes bounds the reason a job's log at the forge shows.
const maxForgeReasonBytes = 200

// forgeReason is what the forge is told of why a VM's job failed: the
// class of cause with a short message of the host's own making. The
// cause's text stays in the host's log: it may name state-directory paths
// or a VMM's errors, which the job's readers at the forge must not see.
func forgeReason(cause error, rec vmstate.Record, jobTimeout time.Duration) string {
	switch reasonOf(cause) {
	case ReasonJobTimeout:
		return fmt.Sprintf("job timeout (%s)", shortDuration(jobTimeout))
	case ReasonCrashed:
		return "the VM crashed"
	case ReasonRunner:
		if rec.ExitCode != nil {
			return fmt.Sprintf("runner exit code %d", *rec.ExitCode)
		}
		return "the runner exited non-zero"
	case ReasonRecycled:
		return "no job seen within the job timeout"
	case ReasonStopped:
		switch {
		case errors.Is(cause, errForced):
			return "drained (the host's drain grace period ended)"
		case errors.Is(cause, errDrain):
			return "drained"
		case errors.Is(cause, errKilledByOperator):
			return "killed by an operator"
		}
		return "stopped"
	}
	return "the VM ended (" + reasonOf(cause) + ")"
}

// shortDuration is d without its zero tails: 6h, 1h30m, 10m, 1m30s.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

func (v *vm) setJobFailed() {
	v.mu.Lock()
	v.jobFailed = true
	v.mu.Unlock()
}
