package pool

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/config"
	"github.com/nixos-fireactions/nixos-fireactions/forge"
	"github.com/nixos-fireactions/nixos-fireactions/internal/hosttest"
)

// watchedFailForge is the fake forge, noting at each FailJob how long
// the call may take and what of the VM's network was still there.
type watchedFailForge struct {
	*fakeForge
	net *hosttest.Net

	mu    sync.Mutex
	calls []failJobCall
}

type failJobCall struct {
	budget   time.Duration // until the call's deadline
	taps     int           // TAPs left when the forge was called
	admitted int           // network rules left
}

func (f *watchedFailForge) FailJob(ctx context.Context, r forge.RunnerRef, job, reason string) error {
	c := failJobCall{budget: time.Hour}
	if d, ok := ctx.Deadline(); ok {
		c.budget = time.Until(d)
	}
	f.net.Lock()
	c.taps, c.admitted = len(f.net.TAPs), len(f.net.Admitted)
	f.net.Unlock()
	f.mu.Lock()
	f.calls = append(f.calls, c)
	f.mu.Unlock()
	return f.fakeForge.FailJob(ctx, r, job, reason)
}

// Teardown frees the VM's network (TAP, rules, address) before it calls
// the forge, which the host talks to, not the guest: a hanging forge
// holds none of it. Failing the job is bounded by failJobTimeout, not by
// the whole teardown's minute.
func TestTeardownFreesTheNetworkBeforeFailingTheJobWithinItsOwnTimeout(t *testing.T) {
	var wf *watchedFailForge
	var net *hosttest.Net
	h := newHarnessForge(t, 0, 1, guestRunsOneJob, func(p *config.Pool) { p.Timeouts.Job = 200 * time.Millisecond },
		slog.New(slog.NewTextHandler(io.Discard, nil)),
		func(f *fakeForge) forge.Forge { wf = &watchedFailForge{fakeForge: f}; return wf })
	net = h.net
	wf.net = net
	h.hv.jobTime = time.Hour
	h.forge.enqueue("endless")
	eventually(t, 3*time.Second, "the VM ended at its job timeout", func() bool { return len(h.forge.failedJobs()) == 1 })
	wf.mu.Lock()
	calls := append([]failJobCall(nil), wf.calls...)
	wf.mu.Unlock()
	if len(calls) != 1 {
		t.Fatalf("%d FailJob calls, want 1", len(calls))
	}
	c := calls[0]
	if c.taps != 0 || c.admitted != 0 {
		t.Errorf("the forge was called with %d TAP(s) and %d network rule(s) of the VM still there", c.taps, c.admitted)
	}
	if c.budget > failJobTimeout {
		t.Errorf("failing the job may take %s, more than failJobTimeout %s", c.budget.Round(time.Second), failJobTimeout)
	}
	eventually(t, 2*time.Second, "the VM gone", func() bool { return len(h.m.VMs()) == 0 })
	h.assertNothingLeft(t)
}

// answeringFailForge is the fake forge whose FailJob answers err.
type answeringFailForge struct {
	*fakeForge
	err error
}

func (f *answeringFailForge) FailJob(context.Context, forge.RunnerRef, string, string) error {
	return f.err
}

// A job the forge says had ended already, or one whose runner's
// credential this run does not hold (registered before a restart), is no
// failure of the host's: logged at INFO and WARN, never as an ERROR, and
// not as a job failed.
func TestFailJobAnswersOfTheForgeAreLoggedForWhatTheyAre(t *testing.T) {
	for _, c := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("gitea: task 9: %w", forge.ErrJobEnded), `level=INFO msg="job had ended at the forge already: left as it is"`},
		{fmt.Errorf("gitea: task 9: %w", forge.ErrNoCredential), `level=WARN msg="job not failed at the forge: the runner's memo lacks what its driver needs (its credential, or the job it took)`},
	} {
		t.Run(c.err.Error(), func(t *testing.T) {
			var logs hosttest.SyncBuffer
			h := newHarnessForge(t, 0, 1, guestRunsOneJob, nil, slog.New(slog.NewTextHandler(&logs, nil)),
				func(f *fakeForge) forge.Forge { return &answeringFailForge{fakeForge: f, err: c.err} })
			h.forge.enqueue(dyingJob + "j1")
			eventually(t, 3*time.Second, "the job's VM gone", func() bool {
				h.hv.mu.Lock()
				defer h.hv.mu.Unlock()
				return h.hv.started == 1 && len(h.m.VMs()) == 0
			})
			text := logs.String()
			if !strings.Contains(text, c.want) {
				t.Errorf("log lacks %s:\n%s", c.want, grepLines(text, "forge"))
			}
			for _, bad := range []string{`msg="fail the job at the forge"`, `msg="job failed at the forge"`} {
				if strings.Contains(text, bad) {
					t.Errorf("logged %s:\n%s", bad, grepLines(text, "forge"))
				}
			}
		})
	}
}
