package pool

import (
	"context"
	"errors"
	"regexp"
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
// taken a job. It runs before the runner is removed: the driver speaks with
// the runner's own credential. Forges whose driver cannot fail a job wait
// for their own clean-up, which the log says.
// It fails a VM's job once at most.
func (v *vm) failJob(ctx context.Context, rec vmstate.Record, cause error) {
	if rec.RunnerID == "" || rec.Job == "" && rec.Busy.IsZero() {
		return // no runner, or it took no job
	}
	v.mu.Lock()
	done := v.jobFailed
	v.mu.Unlock()
	if done {
		return
	}
	reason := "the vm ended"
	if cause != nil {
		reason = cause.Error()
	}
	log := v.log.With("runner", rec.RunnerName, "job", rec.Job)
	f, ok := v.pool.forge.(forge.JobFailer)
	var err error
	if ok {
		err = f.FailJob(ctx, forge.RunnerRef{ID: rec.RunnerID, Name: rec.RunnerName}, rec.Job, reason)
	}
	if !ok || errors.Is(err, errors.ErrUnsupported) {
		log.Warn("the forge's driver cannot fail a job: the forge fails it when its own clean-up finds the runner gone", "forge", v.pool.forge.Kind(), "reason", reason)
		v.setJobFailed()
		return
	}
	if err != nil {
		log.Error("fail the job at the forge", "reason", reason, "err", err)
		return
	}
	v.setJobFailed()
	log.Warn("job failed at the forge", "reason", reason)
}

func (v *vm) setJobFailed() {
	v.mu.Lock()
	v.jobFailed = true
	v.mu.Unlock()
}
