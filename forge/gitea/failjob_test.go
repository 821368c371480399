package gitea

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"testing"

	runnerv1 "code.gitea.io/actions-proto-go/runner/v1"

	"github.com/nixos-fireactions/nixos-fireactions/forge"
	"github.com/nixos-fireactions/nixos-fireactions/internal/double/giteadouble"
)

// newFakeTasks is a Gitea double whose runner service holds tasks, and
// a driver of it.
func newFakeTasks(t *testing.T) (*giteadouble.Gitea, *Forge) {
	g := giteadouble.New()
	return g, newDriver(t, giteadouble.Serve(t, g).URL, Scope{Kind: "instance"})
}

func TestFailJobFailsTheRunnersTaskWithItsOwnCredentialAndSaysWhy(t *testing.T) {
	ft, d := newFakeTasks(t)
	ctx := context.Background()
	r, err := d.Register(ctx, forge.RunnerSpec{Name: "fa-h-1", Labels: []string{"l"}, Guest: guestOpts})
	if err != nil {
		t.Fatal(err)
	}
	ft.TaskOwner[42] = 1
	ft.Logs[42] = []string{"step 1", "step 2"}
	if err := d.FailJob(ctx, r.RunnerRef, "42", "guest powered off; runner exit code 2"); err != nil {
		t.Fatal(err)
	}
	if got := ft.Results[42]; got != runnerv1.Result_RESULT_FAILURE {
		t.Errorf("task 42 result %v, want failure", got)
	}
	if got := ft.Logs[42]; len(got) != 3 || got[2] != "fireactions: the runner died before its job ended: guest powered off; runner exit code 2" {
		t.Errorf("task 42 log %q", got)
	}
	for _, h := range ft.Headers {
		if h != "uuid-1|RUNNER-OWN-TOKEN-1" {
			t.Errorf("a call spoke as %q, not as the runner", h)
		}
	}
	if strings.Contains(strings.Join(ft.Headers, ","), ft.APIToken) {
		t.Error("the scope token was sent to the runner protocol")
	}
}

func TestFailJobLeavesAnEndedTaskAsItIs(t *testing.T) {
	ft, d := newFakeTasks(t)
	ctx := context.Background()
	r, _ := d.Register(ctx, forge.RunnerSpec{Name: "fa-h-1", Labels: []string{"l"}, Guest: guestOpts})
	ft.TaskOwner[9] = 1
	ft.Results[9] = runnerv1.Result_RESULT_SUCCESS
	ft.Logs[9] = []string{"done"}
	if err := d.FailJob(ctx, r.RunnerRef, "9", "runner exit code 1"); !errors.Is(err, forge.ErrJobEnded) {
		t.Fatalf("failing an ended task: %v, want forge.ErrJobEnded", err)
	}
	if ft.Results[9] != runnerv1.Result_RESULT_SUCCESS || len(ft.Logs[9]) != 1 {
		t.Fatalf("an ended task was changed: result %v, log %q", ft.Results[9], ft.Logs[9])
	}
}

func TestFailJobRefusesWhatItCannotDo(t *testing.T) {
	ft, d := newFakeTasks(t)
	ctx := context.Background()
	r1, _ := d.Register(ctx, forge.RunnerSpec{Name: "fa-h-1", Labels: []string{"l"}, Guest: guestOpts})
	r2, _ := d.Register(ctx, forge.RunnerSpec{Name: "fa-h-2", Labels: []string{"l"}, Guest: guestOpts})
	ft.TaskOwner[7] = 2
	if err := d.FailJob(ctx, r1.RunnerRef, "7", "x"); err == nil || ft.Results[7] != runnerv1.Result_RESULT_UNSPECIFIED {
		t.Errorf("another runner's task: err %v, result %v", err, ft.Results[7])
	}
	if err := d.FailJob(ctx, r2.RunnerRef, "", "x"); err == nil {
		t.Error("no task id, no error")
	}
	// A runner whose memo holds no credential (a record written before
	// memos were kept, or one damaged): nothing is sent.
	calls := len(ft.Headers)
	for _, memo := range []forge.RunnerMemo{"", "{", `{"uuid":"uuid-2"}`} {
		ref := forge.RunnerRef{ID: r2.ID, Name: r2.Name, Memo: memo}
		if err := d.FailJob(ctx, ref, "7", "x"); !errors.Is(err, forge.ErrNoCredential) {
			t.Errorf("memo %q: %v, want forge.ErrNoCredential", string(memo), err)
		}
	}
	if len(ft.Headers) != calls {
		t.Errorf("%d calls without a credential", len(ft.Headers)-calls)
	}
	// A removed runner's credential is Gitea's to refuse.
	if err := d.Remove(ctx, r2.RunnerRef); err != nil {
		t.Fatal(err)
	}
	if err := d.FailJob(ctx, r2.RunnerRef, "7", "x"); err == nil || ft.Results[7] != runnerv1.Result_RESULT_UNSPECIFIED {
		t.Errorf("a removed runner's task: err %v, result %v", err, ft.Results[7])
	}
}

// TestFailJobAfterARestartUsesTheRunnersMemo: the runner's credential
// travels in its memo, which the pool keeps in the VM's record; a driver
// made anew (the orchestrator restarted) fails the runner's task with
// it, exactly as the driver that registered the runner would: its own
// credential, the reason in the task's log, the task failed.
func TestFailJobAfterARestartUsesTheRunnersMemo(t *testing.T) {
	ft, before := newFakeTasks(t)
	ctx := context.Background()
	r, err := before.Register(ctx, forge.RunnerSpec{Name: "fa-h-1", Labels: []string{"l"}, Guest: guestOpts})
	if err != nil {
		t.Fatal(err)
	}
	if r.Memo == "" {
		t.Fatal("Register returned no memo")
	}
	// What the VM's record keeps, as strings; the first driver is gone.
	id, name, memo := r.ID, r.Name, string(r.Memo)
	after := newDriver(t, before.base, Scope{Kind: "instance"})
	ft.TaskOwner[42] = 1
	ft.Logs[42] = []string{"step 1"}
	ref := forge.RunnerRef{ID: id, Name: name, Memo: forge.RunnerMemo(memo)}
	if err := after.FailJob(ctx, ref, "42", "runner exit code 2"); err != nil {
		t.Fatalf("FailJob after a restart: %v", err)
	}
	if got := ft.Results[42]; got != runnerv1.Result_RESULT_FAILURE {
		t.Errorf("task 42 result %v, want failure", got)
	}
	if got := ft.Logs[42]; len(got) != 2 || got[1] != "fireactions: the runner died before its job ended: runner exit code 2" {
		t.Errorf("task 42 log %q", got)
	}
	for _, h := range ft.Headers {
		if h != "uuid-1|RUNNER-OWN-TOKEN-1" {
			t.Errorf("a call spoke as %q, not as the runner", h)
		}
	}
}

// TestRunnerMemoHoldsOnlyTheRunnersOwnCredentialAndNeverPrints: the memo
// (which goes to disk, in the VM's record) holds the runner's own token,
// never the scope's API or registration token; printed or logged, a
// runner with its memo shows [redacted].
func TestRunnerMemoHoldsOnlyTheRunnersOwnCredentialAndNeverPrints(t *testing.T) {
	fg, srv := newFakeGitea(t)
	d := newDriver(t, srv.URL, Scope{Kind: "instance"})
	r, err := d.Register(context.Background(), forge.RunnerSpec{Name: "fa-h-1", Labels: []string{"l"}, Guest: guestOpts})
	if err != nil {
		t.Fatal(err)
	}
	memo := string(r.Memo)
	if !strings.Contains(memo, "RUNNER-OWN-TOKEN-1") {
		t.Fatalf("memo %q lacks the runner's own token", memo)
	}
	for _, scope := range []string{fg.APIToken, fg.RegToken, "REG-TOKEN"} {
		if strings.Contains(memo, scope) {
			t.Errorf("memo holds the scope-wide %q", scope)
		}
	}
	var buf strings.Builder
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	log.Info("x", "runner", r.RunnerRef, "memo", r.Memo)
	log.Info("x", slog.Any("ref", r.RunnerRef))
	slog.New(slog.NewTextHandler(&buf, nil)).Info("x", "runner", r.RunnerRef, "memo", r.Memo)
	for _, s := range []string{fmt.Sprint(r.RunnerRef), fmt.Sprintf("%+v %#v %s %q %x", r.RunnerRef, r.RunnerRef, r.Memo, r.Memo, r.Memo), buf.String()} {
		if strings.Contains(s, "RUNNER-OWN-TOKEN") || strings.Contains(s, "uuid-1") {
			t.Errorf("the memo shows: %s", s)
		}
		if !strings.Contains(s, "[redacted]") {
			t.Errorf("no [redacted] in %s", s)
		}
	}
}

func TestRunnerPlanLetsTheGuestReportTheTaskID(t *testing.T) {
	_, srv := newFakeGitea(t)
	d := newDriver(t, srv.URL, Scope{Kind: "instance"})
	r, err := d.Register(context.Background(), forge.RunnerSpec{Name: "fa-h-1", Labels: []string{"l"}, Guest: guestOpts})
	if err != nil {
		t.Fatal(err)
	}
	// The Gitea runner v1.0.8's line when it takes a task.
	line := `time="2026-12-05T08:27:25Z" level=info msg="task 17 repo is ci/bomb https://x http://10.226.0.1:3000"`
	if !strings.Contains(line, r.Guest.BusyLine) {
		t.Fatalf("busy line %q not in %q", r.Guest.BusyLine, line)
	}
	m := regexpMust(t, r.Guest.JobPattern).FindStringSubmatch(line)
	if m == nil || m[1] != "17" {
		t.Fatalf("job pattern %q finds %q in %q", r.Guest.JobPattern, m, line)
	}
}

func regexpMust(t *testing.T, s string) *regexp.Regexp {
	t.Helper()
	re, err := regexp.Compile(s)
	if err != nil {
		t.Fatal(err)
	}
	return re
}
