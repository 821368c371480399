package gitea

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"

	runnerv1 "code.gitea.io/actions-proto-go/runner/v1"
	"connectrpc.com/connect"

	"github.com/nixos-fireactions/nixos-fireactions/forge"
)

// fakeTasks is the part of Gitea's runner service FailJob uses: tasks
// owned by runners, authenticated by the runner's uuid and token headers
// and checked against the task's runner, as Gitea 1.26 does
// (routers/api/actions/runner: UpdateTask, UpdateLog).
type fakeTasks struct {
	*fakeGitea
	owner   map[int64]int64 // task -> runner id
	results map[int64]runnerv1.Result
	logs    map[int64][]string
	headers []string // the uuid header of every call
}

func (f *fakeTasks) runner(h interface{ Get(string) string }) (int64, error) {
	f.headers = append(f.headers, h.Get("x-runner-uuid")+"|"+h.Get("x-runner-token"))
	var id int64
	if _, err := fmt.Sscanf(h.Get("x-runner-uuid"), "uuid-%d", &id); err != nil || h.Get("x-runner-token") != fmt.Sprintf("RUNNER-OWN-TOKEN-%d", id) {
		return 0, connect.NewError(connect.CodeUnauthenticated, fmt.Errorf("unregistered runner"))
	}
	return id, nil
}

func (f *fakeTasks) UpdateTask(_ context.Context, req *connect.Request[runnerv1.UpdateTaskRequest]) (*connect.Response[runnerv1.UpdateTaskResponse], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	id, err := f.runner(req.Header())
	if err != nil {
		return nil, err
	}
	task := req.Msg.State.GetId()
	if f.owner[task] != id {
		return nil, connect.NewError(connect.CodeInternal, fmt.Errorf("update task: invalid runner for task"))
	}
	if f.results[task] == runnerv1.Result_RESULT_UNSPECIFIED { // a final state stays
		f.results[task] = req.Msg.State.GetResult()
	}
	return connect.NewResponse(&runnerv1.UpdateTaskResponse{State: &runnerv1.TaskState{Id: task, Result: f.results[task]}}), nil
}

func (f *fakeTasks) UpdateLog(_ context.Context, req *connect.Request[runnerv1.UpdateLogRequest]) (*connect.Response[runnerv1.UpdateLogResponse], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	id, err := f.runner(req.Header())
	if err != nil {
		return nil, err
	}
	task := req.Msg.GetTaskId()
	if f.owner[task] != id {
		return nil, connect.NewError(connect.CodeInternal, fmt.Errorf("invalid runner for task"))
	}
	ack := int64(len(f.logs[task]))
	if len(req.Msg.Rows) == 0 || req.Msg.Index > ack || int64(len(req.Msg.Rows))+req.Msg.Index <= ack {
		return connect.NewResponse(&runnerv1.UpdateLogResponse{AckIndex: ack}), nil
	}
	for _, r := range req.Msg.Rows[ack-req.Msg.Index:] {
		f.logs[task] = append(f.logs[task], r.GetContent())
	}
	return connect.NewResponse(&runnerv1.UpdateLogResponse{AckIndex: int64(len(f.logs[task]))}), nil
}

func newFakeTasks(t *testing.T) (*fakeTasks, *Forge) {
	fg := &fakeGitea{apiToken: "API-TOKEN", regToken: "REG-TOKEN-1", runners: map[int64]string{}}
	ft := &fakeTasks{fakeGitea: fg, owner: map[int64]int64{}, results: map[int64]runnerv1.Result{}, logs: map[int64][]string{}}
	srv := serveFake(t, ft)
	return ft, newDriver(t, srv.URL, Scope{Kind: "instance"})
}

func TestFailJobFailsTheRunnersTaskWithItsOwnCredentialAndSaysWhy(t *testing.T) {
	ft, d := newFakeTasks(t)
	ctx := context.Background()
	r, err := d.Register(ctx, forge.RunnerSpec{Name: "fa-h-1", Labels: []string{"l"}, Guest: guestOpts})
	if err != nil {
		t.Fatal(err)
	}
	ft.owner[42] = 1
	ft.logs[42] = []string{"step 1", "step 2"}
	if err := d.FailJob(ctx, r.RunnerRef, "42", "guest powered off; runner exit code 2"); err != nil {
		t.Fatal(err)
	}
	if got := ft.results[42]; got != runnerv1.Result_RESULT_FAILURE {
		t.Errorf("task 42 result %v, want failure", got)
	}
	if got := ft.logs[42]; len(got) != 3 || got[2] != "fireactions: the runner died before its job ended: guest powered off; runner exit code 2" {
		t.Errorf("task 42 log %q", got)
	}
	for _, h := range ft.headers {
		if h != "uuid-1|RUNNER-OWN-TOKEN-1" {
			t.Errorf("a call spoke as %q, not as the runner", h)
		}
	}
	if strings.Contains(strings.Join(ft.headers, ","), ft.apiToken) {
		t.Error("the scope token was sent to the runner protocol")
	}
}

func TestFailJobLeavesAnEndedTaskAsItIs(t *testing.T) {
	ft, d := newFakeTasks(t)
	ctx := context.Background()
	r, _ := d.Register(ctx, forge.RunnerSpec{Name: "fa-h-1", Labels: []string{"l"}, Guest: guestOpts})
	ft.owner[9] = 1
	ft.results[9] = runnerv1.Result_RESULT_SUCCESS
	ft.logs[9] = []string{"done"}
	if err := d.FailJob(ctx, r.RunnerRef, "9", "runner exit code 1"); !errors.Is(err, forge.ErrJobEnded) {
		t.Fatalf("failing an ended task: %v, want forge.ErrJobEnded", err)
	}
	if ft.results[9] != runnerv1.Result_RESULT_SUCCESS || len(ft.logs[9]) != 1 {
		t.Fatalf("an ended task was changed: result %v, log %q", ft.results[9], ft.logs[9])
	}
}

func TestFailJobRefusesWhatItCannotDo(t *testing.T) {
	ft, d := newFakeTasks(t)
	ctx := context.Background()
	r1, _ := d.Register(ctx, forge.RunnerSpec{Name: "fa-h-1", Labels: []string{"l"}, Guest: guestOpts})
	r2, _ := d.Register(ctx, forge.RunnerSpec{Name: "fa-h-2", Labels: []string{"l"}, Guest: guestOpts})
	ft.owner[7] = 2
	if err := d.FailJob(ctx, r1.RunnerRef, "7", "x"); err == nil || ft.results[7] != runnerv1.Result_RESULT_UNSPECIFIED {
		t.Errorf("another runner's task: err %v, result %v", err, ft.results[7])
	}
	if err := d.FailJob(ctx, r2.RunnerRef, "", "x"); err == nil {
		t.Error("no task id, no error")
	}
	if err := d.Remove(ctx, r2.RunnerRef); err != nil {
		t.Fatal(err)
	}
	if err := d.FailJob(ctx, r2.RunnerRef, "7", "x"); !errors.Is(err, forge.ErrNoCredential) {
		t.Errorf("a removed runner's credential was still used: %v", err)
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
