package metrics

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/nixos-fireactions/nixos-fireactions/forge"
)

// RateLimited is implemented by drivers that know their API budget.
type RateLimited interface {
	RateLimitRemaining() int
}

// Forge wraps pool poolName's scope of the forge named forgeName so each
// call is counted under the forge's name, and the API budget the scope
// knows is a gauge under the forge's and the pool's: pools on different
// credentials (GitHub App installations, tokens) have separate budgets,
// which one series per forge would flip between. The wrapper is a
// forge.Retirer exactly when the scope is.
func (m *Metrics) Forge(forgeName, poolName string, f forge.Forge) forge.Forge {
	inst := &instrumented{Forge: f, m: m, name: forgeName, pool: poolName}
	if _, retires := f.(forge.Retirer); retires {
		return &instrumentedRetirer{inst}
	}
	return inst
}

// Webhooks wraps the webhook endpoint of the forge named name (its
// forge.Driver) so each delivery is counted once, under op "webhook",
// however many pools the forge has.
func (m *Metrics) Webhooks(name string, r forge.WebhookReceiver) forge.WebhookReceiver {
	return &countedWebhooks{WebhookReceiver: r, m: m, name: name}
}

type countedWebhooks struct {
	forge.WebhookReceiver
	m    *Metrics
	name string
}

func (c *countedWebhooks) ServeWebhook(w http.ResponseWriter, r *http.Request, kick func()) {
	c.m.forgeRequests.WithLabelValues(c.name, "webhook").Inc()
	c.WebhookReceiver.ServeWebhook(w, r, kick)
}

type instrumented struct {
	forge.Forge
	m    *Metrics
	name string // the forge's
	pool string
}

// Unwrap is the wrapped driver (forge.NotifierOf looks through it).
func (i *instrumented) Unwrap() forge.Forge { return i.Forge }

func (i *instrumented) count(op string, err error) {
	i.m.forgeRequests.WithLabelValues(i.name, op).Inc()
	// The error series exists from the first request on, at 0 until an
	// error: an error ratio then reads 0, not nothing.
	errs := i.m.forgeErrors.WithLabelValues(i.name, op)
	if err != nil {
		errs.Inc()
	}
	if r, ok := i.Forge.(RateLimited); ok {
		i.m.rateMu.Lock()
		i.m.rateKnown[rateKey{i.name, i.pool}] = true
		i.m.forgeRateLimit.WithLabelValues(i.name, i.pool).Set(float64(r.RateLimitRemaining()))
		i.m.rateMu.Unlock()
	}
}

func (i *instrumented) QueuedJobs(ctx context.Context) ([]forge.Job, error) {
	j, err := i.Forge.QueuedJobs(ctx)
	i.count("queued_jobs", err)
	return j, err
}

func (i *instrumented) Register(ctx context.Context, s forge.RunnerSpec) (*forge.Runner, error) {
	r, err := i.Forge.Register(ctx, s)
	i.count("register", err)
	return r, err
}

func (i *instrumented) Runners(ctx context.Context, owner forge.Owner) ([]forge.RunnerState, error) {
	r, err := i.Forge.Runners(ctx, owner)
	i.count("runners", err)
	return r, err
}

func (i *instrumented) Remove(ctx context.Context, r forge.RunnerRef) error {
	err := i.Forge.Remove(ctx, r)
	i.count("remove", err)
	return err
}

// FailJob implements forge.JobFailer for every wrapped driver: a driver
// that cannot fail jobs answers errors.ErrUnsupported. forge.ErrJobEnded,
// forge.ErrNoCredential and errors.ErrUnsupported from the driver are
// counted as requests, not as errors.
func (i *instrumented) FailJob(ctx context.Context, r forge.RunnerRef, job, reason string) error {
	f, ok := i.Forge.(forge.JobFailer)
	if !ok {
		return fmt.Errorf("%s driver: fail a job: %w", i.Forge.Kind(), errors.ErrUnsupported)
	}
	err := f.FailJob(ctx, r, job, reason)
	counted := err
	if errors.Is(err, forge.ErrJobEnded) || errors.Is(err, forge.ErrNoCredential) || errors.Is(err, errors.ErrUnsupported) {
		// Answers, not failures: the job had ended, the runner's
		// credential did not outlive a restart, or the driver was set
		// not to fail jobs (github's cancel_runs: off). The pool logs them.
		counted = nil
	}
	i.count("fail_job", counted)
	return err
}

// LearnJob implements forge.JobLearner for every wrapped driver: a
// driver that has nothing to learn of a runner's job answers
// errors.ErrUnsupported, with the memo as it was, uncounted.
func (i *instrumented) LearnJob(ctx context.Context, r forge.RunnerRef) (forge.RunnerMemo, error) {
	l, ok := i.Forge.(forge.JobLearner)
	if !ok {
		return r.Memo, fmt.Errorf("%s driver: learn a runner's job: %w", i.Forge.Kind(), errors.ErrUnsupported)
	}
	memo, err := l.LearnJob(ctx, r)
	i.count("learn_job", err)
	return memo, err
}

// retire counts a forge.Retirer's Retire; only the wrappers of drivers
// that are one have it as a method.
func (i *instrumented) retire(ctx context.Context, r forge.RunnerRef) error {
	err := i.Forge.(forge.Retirer).Retire(ctx, r)
	i.count("retire", err)
	return err
}

type instrumentedRetirer struct{ *instrumented }

func (i *instrumentedRetirer) Retire(ctx context.Context, r forge.RunnerRef) error {
	return i.retire(ctx, r)
}
