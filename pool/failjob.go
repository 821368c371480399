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
		err = f.FailJob(ctx, forge.RunnerRef{ID: rec.RunnerID, Name: rec.RunnerName}, rec.Job, reason)
	}
	switch {
	case !ok || errors.Is(err, errors.ErrUnsupported):
		log.Warn("the forge's driver cannot fail a job: the forge fails it when its own clean-up finds the runner gone", "forge", v.pool.forge.Kind(), "reason", reason)
	case errors.Is(err, forge.ErrJobEnded):
		log.Info("job had ended at the forge already: left as it is", "reason", reason)
	case errors.Is(err, forge.ErrNoCredential):
		// Its runner was registered (Gitea: its credential) or retired
		// (GitLab: the job it took) before a restart: what the driver
		// needs lived in the previous run's memory only.
		log.Warn("job not failed at the forge: what the driver held of its runner (its credential, or the job it took) did not outlive the restart; the forge ends the job when its own clean-up finds the runner gone", "reason", reason, "err", err)
	case err != nil:
		log.Error("fail the job at the forge", "reason", reason, "err", err)
		return
	default:
		log.Warn("job failed at the forge", "reason", reason)
	}
	v.setJobFailed()
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
