package giteadouble

import (
	"context"
	"net/http"
	"testing"

	runnerv1 "code.gitea.io/actions-proto-go/runner/v1"
	"code.gitea.io/actions-proto-go/runner/v1/runnerv1connect"
	"connectrpc.com/connect"
)

// The double refuses what Gitea 1.26 refuses, as Gitea does.
func TestRefusesAsGiteaDoes(t *testing.T) {
	g := New()
	srv := Serve(t, g)
	get := func(path, token string) int {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "token "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, c := range []struct {
		path, token string
		want        int
	}{
		{"/api/v1/admin/actions/jobs?status=queued", g.APIToken, 200}, // positive control
		{"/api/v1/admin/actions/jobs?status=queued", "", 401},
		{"/api/v1/admin/actions/jobs?status=queued", "wrong", 401},
		{"/api/v1/admin/actions/jobs?status=bogus", g.APIToken, 400},
	} {
		if got := get(c.path, c.token); got != c.want {
			t.Errorf("GET %s with %q: %d, want %d", c.path, c.token, got, c.want)
		}
	}
	client := runnerv1connect.NewRunnerServiceClient(http.DefaultClient, srv.URL+"/api/actions")
	_, err := client.Register(context.Background(), connect.NewRequest(&runnerv1.RegisterRequest{Name: "r", Token: "wrong"}))
	if connect.CodeOf(err) != connect.CodeUnknown {
		t.Errorf("Register with a wrong token: %v, want Gitea's plain error (code unknown)", err)
	}
	resp, err := client.Register(context.Background(), connect.NewRequest(&runnerv1.RegisterRequest{Name: "r", Token: g.RegToken, Ephemeral: true}))
	if err != nil || !resp.Msg.Runner.Ephemeral {
		t.Fatalf("Register: %+v, %v", resp, err)
	}
	if _, err := client.UpdateLog(context.Background(), connect.NewRequest(&runnerv1.UpdateLogRequest{TaskId: 1})); connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Errorf("UpdateLog without the runner's headers: %v, want unauthenticated", err)
	}
}
