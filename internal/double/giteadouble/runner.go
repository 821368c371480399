package giteadouble

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	runnerv1 "code.gitea.io/actions-proto-go/runner/v1"
	"connectrpc.com/connect"
)

// Register is routers/api/actions/runner.Register of Gitea 1.26: its
// refusals are plain errors (connect's "unknown" code), and the answer's
// ephemeral flag is the request's.
func (g *Gitea) Register(_ context.Context, req *connect.Request[runnerv1.RegisterRequest]) (*connect.Response[runnerv1.RegisterResponse], error) {
	LockAfterDelay(&g.Mu, &g.RegisterDelay)
	defer g.Mu.Unlock()
	if req.Msg.Token == "" || req.Msg.Name == "" {
		return nil, errors.New("missing runner token, name")
	}
	if req.Msg.Token != g.RegToken {
		return nil, errors.New("runner registration token not found")
	}
	ephemeral := req.Msg.Ephemeral && !g.WithoutEphemeral
	id := g.addRunner(req.Msg.Name, req.Msg.Labels, ephemeral)
	rn := g.Runners[id]
	return connect.NewResponse(&runnerv1.RegisterResponse{Runner: &runnerv1.Runner{
		Id: id, Uuid: rn.UUID, Token: rn.Token, Name: rn.Name, Version: req.Msg.Version,
		Labels: rn.Labels, Ephemeral: ephemeral,
	}}), nil
}

// LockAfterDelay waits *delay (read under mu), then locks mu: a
// registration a test slowed down, whose work Gitea (and Forgejo, its
// fork, whose double uses this too) still does after the client gave up,
// since the request's end does not stop it.
func LockAfterDelay(mu *sync.Mutex, delay *time.Duration) {
	mu.Lock()
	d := *delay
	mu.Unlock()
	time.Sleep(d)
	mu.Lock()
}

// runner is Gitea's runner interceptor: the call's x-runner-uuid and
// x-runner-token must be a registered runner's.
func (g *Gitea) runner(h interface{ Get(string) string }) (int64, error) {
	uuid, token := h.Get("x-runner-uuid"), h.Get("x-runner-token")
	g.Headers = append(g.Headers, uuid+"|"+token)
	for id, rn := range g.Runners {
		if rn.UUID == uuid && rn.Token == token {
			return id, nil
		}
	}
	return 0, connect.NewError(connect.CodeUnauthenticated, errors.New("unregistered runner"))
}

// ownTask checks that the call comes from the runner the task was given
// to (Gitea's message carries the call's prefix).
func (g *Gitea) ownTask(h interface{ Get(string) string }, task int64, prefix string) error {
	id, err := g.runner(h)
	if err != nil {
		return err
	}
	if g.TaskOwner[task] != id {
		return connect.NewError(connect.CodeInternal, fmt.Errorf("%sinvalid runner for task", prefix))
	}
	return nil
}

// UpdateTask is the runner service's UpdateTask: only the task's runner
// may change it, and a final result stays.
func (g *Gitea) UpdateTask(_ context.Context, req *connect.Request[runnerv1.UpdateTaskRequest]) (*connect.Response[runnerv1.UpdateTaskResponse], error) {
	g.Mu.Lock()
	defer g.Mu.Unlock()
	task := req.Msg.State.GetId()
	if err := g.ownTask(req.Header(), task, "update task: "); err != nil {
		return nil, err
	}
	if g.Results[task] == runnerv1.Result_RESULT_UNSPECIFIED {
		g.Results[task] = req.Msg.State.GetResult()
	}
	return connect.NewResponse(&runnerv1.UpdateTaskResponse{State: &runnerv1.TaskState{Id: task, Result: g.Results[task]}}), nil
}

// UpdateLog is the runner service's UpdateLog: rows from the acknowledged
// index on are appended; the answer is the new acknowledged index.
func (g *Gitea) UpdateLog(_ context.Context, req *connect.Request[runnerv1.UpdateLogRequest]) (*connect.Response[runnerv1.UpdateLogResponse], error) {
	g.Mu.Lock()
	defer g.Mu.Unlock()
	task := req.Msg.GetTaskId()
	if err := g.ownTask(req.Header(), task, ""); err != nil {
		return nil, err
	}
	ack := int64(len(g.Logs[task]))
	if len(req.Msg.Rows) == 0 || req.Msg.Index > ack || int64(len(req.Msg.Rows))+req.Msg.Index <= ack {
		return connect.NewResponse(&runnerv1.UpdateLogResponse{AckIndex: ack}), nil
	}
	for _, r := range req.Msg.Rows[ack-req.Msg.Index:] {
		g.Logs[task] = append(g.Logs[task], r.GetContent())
	}
	return connect.NewResponse(&runnerv1.UpdateLogResponse{AckIndex: int64(len(g.Logs[task]))}), nil
}
