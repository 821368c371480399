package forgejodouble

import (
	"context"
	"strconv"
	"testing"

	runnerv1 "code.gitea.io/actions-proto-go/runner/v1"
	"connectrpc.com/connect"
)

func mustRegister(t *testing.T, d *Double, token, name string) string {
	t.Helper()
	resp, err := d.Register(context.Background(), connect.NewRequest(&runnerv1.RegisterRequest{Name: name, Token: token}))
	if err != nil {
		t.Fatal(err)
	}
	return strconv.FormatInt(resp.Msg.Runner.Id, 10)
}

func TestRegisterRefusesUnknownToken(t *testing.T) {
	d := New(nil)
	_, err := d.Register(context.Background(), connect.NewRequest(&runnerv1.RegisterRequest{Name: "x", Token: "made-up"}))
	if connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Fatalf("unknown registration token: %v", err)
	}
}
