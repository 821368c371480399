package gitea

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	runnerv1 "code.gitea.io/actions-proto-go/runner/v1"
	"code.gitea.io/actions-proto-go/runner/v1/runnerv1connect"
	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/nixos-fireactions/nixos-fireactions/forge"
)

var _ forge.JobFailer = (*Forge)(nil)

// jobPattern finds the task id in the Gitea runner's line that says it
// took a task: `msg="task 42 repo is ci/x ...`.
const jobPattern = `msg="task (\d+) `

// runnerCred is a runner's own credential, which the host keeps (in the
// runner's memo, in the VM's record) so it can speak for a dead runner.
type runnerCred struct{ uuid, token string }

// memoV1 is the runner memo the driver returns from Register: the
// runner's own uuid and token (see forge.RunnerMemo).
type memoV1 struct {
	UUID  string `json:"uuid"`
	Token string `json:"token"`
}

// encodeMemo is the runner's memo holding its credential.
func encodeMemo(c runnerCred) (forge.RunnerMemo, error) {
	b, err := json.Marshal(memoV1{UUID: c.uuid, Token: c.token})
	if err != nil {
		return "", fmt.Errorf("gitea: encode runner memo: %w", err)
	}
	return forge.RunnerMemo(b), nil
}

// credOf is the runner's credential from its memo; false when the memo
// holds none (empty: a record written before memos were kept).
func credOf(m forge.RunnerMemo) (runnerCred, bool) {
	var v memoV1
	if m == "" || json.Unmarshal([]byte(m), &v) != nil || v.UUID == "" || v.Token == "" {
		return runnerCred{}, false
	}
	return runnerCred{uuid: v.UUID, token: v.Token}, true
}

// The runner protocol authenticates a runner by these headers.
const (
	uuidHeader  = "x-runner-uuid"
	tokenHeader = "x-runner-token"
)

// FailJob implements forge.JobFailer the way the runner itself ends a
// task: with the runner's own credential from its memo (never the scope
// token; the same after a restart, the memo being kept in the VM's
// record), it
// appends the reason to the task's log (UpdateLog) and sets the task's
// result to failure (UpdateTask). Gitea refuses a task that is not this
// runner's, and leaves a task that already ended as it is.
func (f *Forge) FailJob(ctx context.Context, r forge.RunnerRef, job, reason string) error {
	task, err := strconv.ParseInt(job, 10, 64)
	if err != nil || task <= 0 {
		return fmt.Errorf("gitea: fail the job of runner %s: task id %q unknown", r.Name, job)
	}
	cred, ok := credOf(r.Memo)
	if !ok {
		return fmt.Errorf("gitea: fail task %d of runner %s: %w", task, r.Name, forge.ErrNoCredential)
	}
	client := runnerv1connect.NewRunnerServiceClient(f.http, f.base+"/api/actions")
	// A state without a result changes nothing but the task's heartbeat,
	// and the answer says whether the task has ended already (a runner
	// may exit non-zero after it reported its job's result).
	probe := connect.NewRequest(&runnerv1.UpdateTaskRequest{State: &runnerv1.TaskState{Id: task}})
	authorize(probe.Header(), cred)
	now, err := client.UpdateTask(ctx, probe)
	if err != nil {
		return fmt.Errorf("gitea: read task %d of runner %s: %w", task, r.Name, err)
	}
	if now.Msg.GetState().GetResult() != runnerv1.Result_RESULT_UNSPECIFIED {
		return fmt.Errorf("gitea: task %d of runner %s: %w", task, r.Name, forge.ErrJobEnded) // left as it is
	}
	logErr := f.appendLog(ctx, client, cred, task, "fireactions: the runner died before its job ended: "+reason)
	req := connect.NewRequest(&runnerv1.UpdateTaskRequest{State: &runnerv1.TaskState{
		Id: task, Result: runnerv1.Result_RESULT_FAILURE, StoppedAt: timestamppb.Now(),
	}})
	authorize(req.Header(), cred)
	if _, err := client.UpdateTask(ctx, req); err != nil {
		return fmt.Errorf("gitea: fail task %d of runner %s: %w", task, r.Name, err)
	}
	if logErr != nil {
		return fmt.Errorf("gitea: task %d of runner %s failed, but its log lacks the reason: %w", task, r.Name, logErr)
	}
	return nil
}

// appendLog adds one line at the end of the task's log: Gitea takes rows
// only at its current length, which an empty call returns.
func (f *Forge) appendLog(ctx context.Context, client runnerv1connect.RunnerServiceClient, cred runnerCred, task int64, line string) error {
	ask := connect.NewRequest(&runnerv1.UpdateLogRequest{TaskId: task})
	authorize(ask.Header(), cred)
	ack, err := client.UpdateLog(ctx, ask)
	if err != nil {
		return fmt.Errorf("read log length: %w", err)
	}
	add := connect.NewRequest(&runnerv1.UpdateLogRequest{
		TaskId: task, Index: ack.Msg.GetAckIndex(),
		Rows: []*runnerv1.LogRow{{Time: timestamppb.Now(), Content: line}},
	})
	authorize(add.Header(), cred)
	got, err := client.UpdateLog(ctx, add)
	if err != nil {
		return fmt.Errorf("append: %w", err)
	}
	if got.Msg.GetAckIndex() != ack.Msg.GetAckIndex()+1 {
		return errors.New("append: the line was not taken")
	}
	return nil
}

func authorize(h interface{ Set(k, v string) }, c runnerCred) {
	h.Set(uuidHeader, c.uuid)
	h.Set(tokenHeader, c.token)
}
