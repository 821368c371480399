package forgejodouble

import (
	"context"
	"strconv"
	"strings"
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

// Register refuses as Forgejo does, each with InvalidArgument: a token
// it does not know, and a request without a token or a name.
func TestRegisterRefusesUnknownToken(t *testing.T) {
	d := New(nil)
	d.regToken["instance"] = "REG-1" // as GET …/registration-token leaves it
	for _, tc := range []struct {
		name, token, err string
	}{
		{"x", "made-up", "runner registration token not found"},
		{"x", "", "missing runner token, name"},
		{"", "REG-1", "missing runner token, name"},
	} {
		_, err := d.Register(context.Background(), connect.NewRequest(&runnerv1.RegisterRequest{Name: tc.name, Token: tc.token}))
		if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("register %q with token %q: %v, want invalid_argument: %s", tc.name, tc.token, err, tc.err)
		}
	}
}
