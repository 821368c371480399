package vmstate

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestALoggedRecordShowsNeitherItsMemoNorItsAgentToken: slog (text and
// JSON, the record and a pointer to it) and fmt never show a record's
// runner memo or agent token; its other fields are shown.
func TestALoggedRecordShowsNeitherItsMemoNorItsAgentToken(t *testing.T) {
	const memo, token = `{"uuid":"u-1","token":"RUNNER-OWN-TOKEN-1"}`, "AGENT-TOKEN-1"
	r := &Record{ID: "a1", Pool: "p", Phase: Busy, RunnerName: "fa-p-a1", RunnerMemo: memo, AgentToken: token}
	if r.RunnerMemo != memo || r.AgentToken != token {
		t.Fatal("control: the record does not hold its secrets")
	}
	var buf bytes.Buffer
	for _, h := range []slog.Handler{slog.NewTextHandler(&buf, nil), slog.NewJSONHandler(&buf, nil)} {
		l := slog.New(h)
		l.Info("vm", "record", r)
		l.Info("vm", "record", *r)
		l.Info("vm", slog.Any("record", r))
	}
	buf.WriteString(fmt.Sprintf("%v %+v %#v %v %v", r, r, r, *r, []*Record{r}))
	out := buf.String()
	for _, secret := range []string{"RUNNER-OWN-TOKEN-1", "AGENT-TOKEN-1", "u-1"} {
		if strings.Contains(out, secret) {
			t.Errorf("%q shown:\n%s", secret, out)
		}
	}
	if !strings.Contains(out, "fa-p-a1") {
		t.Errorf("the record's other fields are not shown:\n%s", out)
	}
	if r.RunnerMemo != memo || r.AgentToken != token {
		t.Fatal("logging the record changed it")
	}
}

// TestOpenMakesAnOpenStateDirectoryTheOwnersOnly: a state directory
// that exists with group or other bits (MkdirAll leaves it so) is made
// 0700 by Open.
func TestOpenMakesAnOpenStateDirectoryTheOwnersOnly(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "vms")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o755 {
		t.Fatalf("control: %v, %v", fi, err)
	}
	if _, err := Open(dir); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o700 {
		t.Fatalf("state directory has mode %v after Open, want 0700", fi.Mode().Perm())
	}
}
