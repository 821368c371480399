// Package forge is the seam between the pool manager and a CI forge
// (Gitea, GitHub, GitLab). It has two levels. A Driver is one configured
// forge: connection, credentials, rate budget and, where the forge sends
// webhooks, the one endpoint that reads, verifies and de-duplicates each
// delivery once. A Forge is one pool's scope of it, handed out by the
// driver: it registers one runner per VM on the host side, hands the
// guest only that runner's own credential, reports the jobs waiting for a
// runner, and makes sure runners are gone when their VMs are.
package forge

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
)

// Forge is one forge scope (an instance, an org, a repo) a pool serves,
// handed out by the forge's Driver.
type Forge interface {
	// Kind is the driver's name: "gitea", "github", "gitlab".
	Kind() string
	// QueuedJobs lists the jobs in the scope that wait for a runner.
	QueuedJobs(ctx context.Context) ([]Job, error)
	// Register creates a runner that takes at most one job, and returns
	// what the guest needs to run it. The scope-wide credential used to
	// create it stays on the host.
	Register(ctx context.Context, spec RunnerSpec) (*Runner, error)
	// Runners lists the scope's runners that owner owns (Owner.Owns: an
	// exact parse of the name, never a prefix match): never another
	// host's, so sweeping what it returns touches no other host's runner.
	Runners(ctx context.Context, owner Owner) ([]RunnerState, error)
	// Remove makes sure the runner is gone. A runner that is already gone
	// is not an error.
	Remove(ctx context.Context, r RunnerRef) error
}

// Retirer is implemented by drivers whose runner credential would take
// more jobs if a job could read it (GitLab: the job runs as the user that
// owns the runner's token, and the runner's token asks GitLab for jobs).
// The pool retires the runner as soon as the guest reports that its one
// job started; the job carries on with its own job credential.
type Retirer interface {
	// Retire makes the runner's own credential useless for taking
	// another job, without disturbing the job it took. A runner that is
	// already gone is not an error.
	Retire(ctx context.Context, r RunnerRef) error
}

// JobFailer is implemented by drivers that can end, as failed, the job a
// runner took when the runner is gone before the job ended (the job broke
// its runner, the VM crashed, a timeout or a forced drain ended it).
// Without it the forge waits for the dead runner until its own clean-up,
// minutes later. Where the forge's API has no failed end for a job from
// outside, the driver ends it the one way it can (GitLab: cancelled).
type JobFailer interface {
	// FailJob marks job failed, with reason, using runner r's own
	// credential where the forge allows. job is the forge's id of the job
	// as the guest reported it (agentproto.Runner.JobPattern), the
	// guest's word only: the driver acts on the job the forge says is
	// r's, never on a job only the guest named. A job that already ended
	// is left as it is and answered with ErrJobEnded. It must be called
	// before Remove: the runner's credential dies with the runner. What
	// the driver needs of the runner (Gitea: its own credential; GitLab:
	// the jobs GitLab listed for it before its retirement) comes in
	// r.Memo, which the pool keeps in the VM's record so that it outlives
	// a restart; a runner whose memo does not hold it (a record written
	// by an older version, or a job listing that failed) is answered
	// ErrNoCredential. A wrapper of a driver that
	// cannot answers errors.ErrUnsupported. Where the runner's credential
	// cannot end a job (GitHub, GitLab), the driver uses the scope's
	// credential on the job it finds the forge gave r.
	FailJob(ctx context.Context, r RunnerRef, job, reason string) error
}

var (
	// ErrJobEnded is FailJob's answer for a job that had ended already
	// (the runner reported its result before it died): left as it is.
	ErrJobEnded = errors.New("the job had ended already")
	// ErrNoCredential is FailJob's answer when what the driver needs to
	// act for the runner is not in its memo (RunnerRef.Memo): a record
	// written before memos were kept, or a job listing that failed.
	ErrNoCredential = errors.New("the runner's memo does not hold what failing its job needs")
)

// Job is a job waiting for a runner.
type Job struct {
	ID       string
	Labels   []string
	Repo     string
	QueuedAt time.Time
}

// RunnerSpec says what runner to create for a VM.
type RunnerSpec struct {
	Name   string
	Labels []string
	// Guest describes the unprivileged user and paths in the guest, which
	// the driver completes with the runner's files and command.
	Guest GuestOptions
}

// GuestOptions are the pool's runner settings the driver needs to build
// the guest side.
type GuestOptions struct {
	AgentPath     string // runner agent binary inside the guest
	User          string
	UID, GID      int
	FetchInterval time.Duration
}

// RunnerRef identifies a runner at the forge.
type RunnerRef struct {
	ID   string
	Name string
	// Memo is what the driver must remember of the runner to act for it
	// once it is gone, returned by Register (and updated by a
	// JobLearner), handed back with the runner to FailJob, Retire and
	// Remove. Empty in a runner listed by Runners.
	Memo RunnerMemo
}

// RunnerMemo is a driver's own note of one runner: opaque to the pool,
// which keeps it in the VM's durable record (vmstate: a file of mode
// 0600 in a directory of mode 0700) so that it outlives a restart, and
// never shows it (the API's records leave it out). It may hold the
// runner's own credential (Gitea), never a scope-wide one. Printed,
// logged or encoded as JSON it reads [redacted]; its text is string(m).
type RunnerMemo string

// redacted is what a RunnerMemo prints as.
const redacted = "[redacted]"

// Format implements fmt.Formatter: every verb prints [redacted], so a
// RunnerRef printed whole never shows the memo.
func (m RunnerMemo) Format(f fmt.State, _ rune) {
	if m == "" {
		return
	}
	_, _ = io.WriteString(f, redacted)
}

// MarshalJSON prints [redacted] too (slog's JSON handler encodes a
// RunnerRef so): the memo's own text is string(m), which the pool stores.
func (m RunnerMemo) MarshalJSON() ([]byte, error) {
	if m == "" {
		return []byte(`""`), nil
	}
	return []byte(`"` + redacted + `"`), nil
}

// LogValue implements slog.LogValuer: [redacted].
func (m RunnerMemo) LogValue() slog.Value {
	if m == "" {
		return slog.StringValue("")
	}
	return slog.StringValue(redacted)
}

// JobLearner is implemented by drivers that must learn something of a
// runner's job while the forge still ties the job to the runner, to fail
// it later (GitLab: the jobs it lists for the runner, before Retire
// deletes the runner and GitLab unties its jobs from it). The pool calls
// it once the VM's job started and before it retires the runner, and
// keeps the memo it returns with the VM's busy record (one write).
type JobLearner interface {
	// LearnJob returns r's memo updated with what the driver learnt. On
	// an error the pool keeps r.Memo as it was.
	LearnJob(ctx context.Context, r RunnerRef) (RunnerMemo, error)
}

// Runner is a freshly registered runner.
type Runner struct {
	RunnerRef
	// Guest is what the VM gets: this runner's own credential and how to
	// run the runner agent. Never log it.
	Guest agentproto.Runner
}

// RunnerState is a runner as the forge sees it.
type RunnerState struct {
	RunnerRef
	Online bool
	Busy   bool
}

// MatchLabels reports whether a job with the given labels may run on a
// runner offering offered: every label the job asks for must be offered.
// A job that asks for no label matches nothing: it would run anywhere.
func MatchLabels(job, offered []string) bool {
	if len(job) == 0 {
		return false
	}
	for _, want := range job {
		found := false
		for _, have := range offered {
			if want == have {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// Driver is one configured forge: an entry of the configuration's
// forges, however many pools name it. It holds what those pools share:
// the connection, the credentials, the API's rate budget and, when it
// takes webhooks (it is then also a WebhookReceiver), the forge's one
// webhook endpoint, which reads, verifies and de-duplicates a delivery
// once and updates the demand of every scope the delivery concerns.
//
// Each pool gets its scope from the driver's own Scope method, whose
// options are the driver's (the daemon translates a pool's
// configuration into them): a Forge that shares the driver's connection
// and demand.
type Driver interface {
	// Name is the forge's name in the configuration; its webhooks come
	// to /webhooks/<Name>.
	Name() string
	// Kind is the driver's name: "gitea", "github", "gitlab".
	Kind() string
	// Retain keeps, of the scopes the driver handed out, those in inUse
	// (looking through wrappers, Unwrap): a reload replaced or removed
	// the others. Those stay usable for calls (a retired pool's busy VMs
	// still remove their runners) but take no more demand.
	Retain(inUse []Forge)
}

// WebhookReceiver is implemented by drivers that also take demand from
// the forge's webhooks (polling stays on: deliveries get lost).
type WebhookReceiver interface {
	// ServeWebhook handles one delivery: it verifies the signature or
	// token in constant time, answers 401 when it does not match, ignores
	// duplicates, updates the driver's view of queued jobs and calls kick
	// when demand changed.
	ServeWebhook(w http.ResponseWriter, r *http.Request, kick func())
}

// The body of a webhook delivery is read once, by the API (bounded, 413
// past the limit), and handed to the forge's driver with the request:
// the driver takes it with Body instead of reading r.Body.
type bodyKey struct{}

// WithBody returns r carrying its already read body (also as r.Body).
func WithBody(r *http.Request, body []byte) *http.Request {
	r = r.WithContext(context.WithValue(r.Context(), bodyKey{}, body))
	r.Body = io.NopCloser(bytes.NewReader(body))
	return r
}

// Body is the delivery's body: the one WithBody stored, or else r.Body
// read whole up to limit bytes (an error past it).
func Body(r *http.Request, limit int64) ([]byte, error) {
	if b, ok := r.Context().Value(bodyKey{}).([]byte); ok {
		return b, nil
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err == nil && int64(len(b)) > limit {
		return nil, &http.MaxBytesError{Limit: limit}
	}
	return b, err
}

// MaxDeliveryID bounds a delivery id a receiver keeps for de-duplication
// (GitHub's and GitLab's are UUIDs, 36 bytes); a longer one is refused.
const MaxDeliveryID = 128

// QueueChange is one job joining or leaving a forge scope's queue.
type QueueChange struct {
	Job Job
	// Queued: the job joined the queue (waits for a runner); false: it
	// left it (taken, done, cancelled or gone).
	Queued bool
}

// QueueNotifier is implemented by drivers that tell each change of their
// queue as it happens (a webhook delivery, a poll), so the pool manager
// reacts to that one job instead of reading the whole queue. QueuedJobs
// stays the authority: the manager reads it at each full reconcile.
type QueueNotifier interface {
	// NotifyQueue makes the driver call notify for every change of the
	// scope's queue from now on, in the order the changes happen, and no
	// longer call an earlier notify; nil stops. notify must not block and
	// must not call the driver. A driver that notifies does not also call
	// a webhook delivery's kick for the change.
	NotifyQueue(notify func(QueueChange))
}

// DemandSourceDeleter is implemented by drivers whose scope owns a
// demand source at the forge that outlives restarts (a GitHub runner
// scale set, named for its pool and host): only an explicit command
// deletes it. Once deleted, the scope takes no more demand from it until
// it is handed out again (a restart or a reload).
type DemandSourceDeleter interface {
	DeleteDemandSource(ctx context.Context) error
}

// ErrNoDemandSource is DeleteDemandSource's answer for a scope that owns
// no such source (a GitHub pool on webhooks).
var ErrNoDemandSource = errors.New("the pool owns no demand source at the forge")

// ErrDemandSourceDeleted is in a driver's answer to Register once its
// pool's demand source was deleted (DeleteDemandSource): the pool has no
// demand, and starts no VM, until its scope is handed out again (reload
// or restart).
var ErrDemandSourceDeleted = errors.New("the pool's demand source at the forge was deleted")

// Unwrapper is implemented by wrappers of a driver (metrics).
type Unwrapper interface {
	Unwrap() Forge
}

// Unwrap is the driver's own scope under f's wrappers (f itself when it
// wraps nothing).
func Unwrap(f Forge) Forge {
	for {
		u, ok := f.(Unwrapper)
		if !ok {
			return f
		}
		f = u.Unwrap()
	}
}

// NotifierOf is f's QueueNotifier, looking through wrappers.
func NotifierOf(f Forge) (QueueNotifier, bool) { return find[QueueNotifier](f) }
