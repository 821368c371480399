package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/api"
	"github.com/nixos-fireactions/nixos-fireactions/forge"
	"github.com/nixos-fireactions/nixos-fireactions/internal/hosttest"
	"github.com/nixos-fireactions/nixos-fireactions/pool"
	"github.com/nixos-fireactions/nixos-fireactions/vmstate"
)

// apiBackend is a fake orchestrator behind the real API handler.
type apiBackend struct {
	mu       sync.Mutex
	pools    []pool.PoolStatus
	vms      []vmstate.Record
	consoles map[string]string
	killed   []string
	deleted  []string // pools whose demand source was deleted
}

func newAPIBackend(dir string) *apiBackend {
	created := time.Now().Add(-2 * time.Hour)
	b := &apiBackend{
		pools: []pool.PoolStatus{
			{Name: "small", Forge: "gitea", Scope: "org:acme", MinIdle: 1, Max: 4, Queued: 3,
				VMs: map[vmstate.Phase]int{vmstate.Idle: 1, vmstate.Busy: 2, vmstate.Booting: 1, vmstate.Creating: 1}},
			{Name: "big", Forge: "gitea", Scope: "repo:acme/x", MinIdle: 0, Max: 2, VMs: map[vmstate.Phase]int{}},
		},
		vms: []vmstate.Record{
			{ID: "vm1", Pool: "small", Phase: vmstate.Busy, PID: 77, Address: "10.200.0.2", RunnerName: "fa-h-vm1", Created: created},
			{ID: "vm2", Pool: "small", Phase: vmstate.Creating, Created: created.Add(time.Hour)},
		},
		consoles: map[string]string{"vm1": filepath.Join(dir, "vm1.log")},
	}
	os.WriteFile(b.consoles["vm1"], []byte("kernel up\nagent up\nrunner ready\n"), 0o600)
	return b
}

func (b *apiBackend) find(name string) (*pool.PoolStatus, error) {
	for i := range b.pools {
		if b.pools[i].Name == name {
			return &b.pools[i], nil
		}
	}
	return nil, fmt.Errorf("pool %q: %w", name, pool.ErrNotFound)
}

func (b *apiBackend) Pools() []pool.PoolStatus {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]pool.PoolStatus(nil), b.pools...)
}

func (b *apiBackend) Pool(name string) (pool.PoolStatus, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	p, err := b.find(name)
	if err != nil {
		return pool.PoolStatus{}, err
	}
	return *p, nil
}

func (b *apiBackend) Scale(name string, minIdle, max *int) (pool.PoolStatus, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	p, err := b.find(name)
	if err != nil {
		return pool.PoolStatus{}, err
	}
	mi, mx := p.MinIdle, p.Max
	if minIdle != nil {
		mi = *minIdle
	}
	if max != nil {
		mx = *max
	}
	if mi < 0 || mx < 1 || mx < mi {
		return pool.PoolStatus{}, fmt.Errorf("pool %q: min_idle %d and max %d: want 0 <= min_idle <= max and max >= 1", name, mi, mx)
	}
	p.MinIdle, p.Max = mi, mx
	return *p, nil
}

func (b *apiBackend) SetPaused(name string, paused bool) (pool.PoolStatus, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	p, err := b.find(name)
	if err != nil {
		return pool.PoolStatus{}, err
	}
	p.Paused = paused
	return *p, nil
}

func (b *apiBackend) SortedVMs() []vmstate.Record {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]vmstate.Record(nil), b.vms...)
}

func (b *apiBackend) VM(id string) (vmstate.Record, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, v := range b.vms {
		if v.ID == id {
			return v, nil
		}
	}
	return vmstate.Record{}, fmt.Errorf("vm %q: %w", id, pool.ErrNotFound)
}

func (b *apiBackend) DeleteDemandSource(_ context.Context, name string) error {
	if _, err := b.Pool(name); err != nil {
		return err
	}
	if name != "small" {
		return fmt.Errorf("pool %q: %w", name, forge.ErrNoDemandSource)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.deleted = append(b.deleted, name)
	return nil
}

func (b *apiBackend) Kill(id string) error {
	if _, err := b.VM(id); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.killed = append(b.killed, id)
	return nil
}

func (b *apiBackend) ConsoleLog(id string) (string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if p, ok := b.consoles[id]; ok {
		return p, nil
	}
	return "", fmt.Errorf("vm %q: %w", id, pool.ErrNotFound)
}

func (b *apiBackend) Ready() bool { return true }
func (b *apiBackend) Kick()       {}

// clearClientEnv keeps the caller's environment out of the tests.
func clearClientEnv(t *testing.T) {
	t.Setenv(envSocket, "")
	t.Setenv(envURL, "")
	t.Setenv(envTokenFile, "")
}

// serveSocket runs the API for b on a temporary unix socket.
func serveSocket(t *testing.T, b *apiBackend) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "api.sock")
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- api.ServeUnix(ctx, path, api.NewHandler(api.Options{Backend: b}, false)) }()
	t.Cleanup(func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("ServeUnix: %v", err)
		}
	})
	for deadline := time.Now().Add(5 * time.Second); ; {
		if _, err := os.Stat(path); err == nil {
			return path
		}
		if time.Now().After(deadline) {
			t.Fatal("api socket did not appear")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func run(args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = Main(args, &out, &errb)
	return code, out.String(), errb.String()
}

// TestClientCommandsOverSocket runs every client command against the real
// API on a unix socket.
func TestClientCommandsOverSocket(t *testing.T) {
	clearClientEnv(t)
	b := newAPIBackend(t.TempDir())
	sock := serveSocket(t, b)

	cases := []struct {
		name     string
		args     []string
		wantCode int
		wantOut  []string // lines (whitespace-normalised) or substrings of stdout
		wantErr  string   // substring of stderr
		check    func(t *testing.T, out string)
	}{
		{name: "pools ls", args: []string{"pools", "ls"}, wantOut: []string{
			"NAME FORGE SCOPE MIN MAX PAUSED IDLE BUSY BOOTING QUEUED",
			"small gitea org:acme 1 4 no 1 2 2 3",
			"big gitea repo:acme/x 0 2 no 0 0 0 0",
		}},
		{name: "pools ls json", args: []string{"pools", "ls", "-o", "json"}, check: func(t *testing.T, out string) {
			var got []pool.PoolStatus
			if err := json.Unmarshal([]byte(out), &got); err != nil || len(got) != 2 || got[0].Name != "small" || got[0].Queued != 3 {
				t.Fatalf("json %q: %v", out, err)
			}
		}},
		{name: "pools scale", args: []string{"pools", "scale", "small", "--min-idle", "2", "--max", "5"}, wantOut: []string{
			"small gitea org:acme 2 5 no 1 2 2 3",
		}},
		{name: "pools scale max only json", args: []string{"pools", "scale", "small", "--max", "6", "-o", "json"}, check: func(t *testing.T, out string) {
			var got pool.PoolStatus
			if err := json.Unmarshal([]byte(out), &got); err != nil || got.MinIdle != 2 || got.Max != 6 {
				t.Fatalf("json %q: %v", out, err)
			}
		}},
		{name: "pools scale nothing", args: []string{"pools", "scale", "small"}, wantCode: 1, wantErr: "give --min-idle and/or --max"},
		{name: "pools scale invalid", args: []string{"pools", "scale", "small", "--min-idle", "9", "--max", "2"}, wantCode: 1,
			wantErr: `pool "small": min_idle 9 and max 2: want 0 <= min_idle <= max`},
		{name: "pools scale unknown", args: []string{"pools", "scale", "nope", "--max", "2"}, wantCode: 1, wantErr: `pool "nope": not found`},
		{name: "pools pause", args: []string{"pools", "pause", "big"}, wantOut: []string{"big gitea repo:acme/x 0 2 yes 0 0 0 0"}},
		{name: "pools resume", args: []string{"pools", "resume", "big"}, wantOut: []string{"big gitea repo:acme/x 0 2 no 0 0 0 0"}},
		{name: "pools pause unknown", args: []string{"pools", "pause", "nope"}, wantCode: 1, wantErr: `pool "nope": not found`},
		{name: "ps", args: []string{"ps"}, wantOut: []string{
			"ID POOL PHASE RUNNER ADDRESS AGE",
			"vm1 small busy fa-h-vm1 10.200.0.2 2h0m",
			"vm2 small creating - - 1h0m",
		}},
		{name: "ps json", args: []string{"ps", "-o", "json"}, check: func(t *testing.T, out string) {
			var got []api.VMSummary
			if err := json.Unmarshal([]byte(out), &got); err != nil || len(got) != 2 || got[0].PID != 77 || got[0].AgeSeconds < 7200 {
				t.Fatalf("json %q: %v", out, err)
			}
		}},
		{name: "ps bad output", args: []string{"ps", "-o", "yaml"}, wantCode: 1, wantErr: "want table or json"},
		{name: "logs", args: []string{"logs", "vm1"}, check: func(t *testing.T, out string) {
			if out != "kernel up\nagent up\nrunner ready\n" {
				t.Fatalf("logs %q", out)
			}
		}},
		{name: "logs tail", args: []string{"logs", "vm1", "--tail", "1"}, check: func(t *testing.T, out string) {
			if out != "runner ready\n" {
				t.Fatalf("logs %q", out)
			}
		}},
		{name: "logs unknown vm", args: []string{"logs", "nope"}, wantCode: 1, wantErr: `vm "nope": not found`},
		{name: "kill", args: []string{"kill", "vm2"}, wantOut: []string{"vm2: killing"}},
		{name: "kill json", args: []string{"kill", "vm1", "-o", "json"}, check: func(t *testing.T, out string) {
			var got api.KillResponse
			if err := json.Unmarshal([]byte(out), &got); err != nil || got.ID != "vm1" {
				t.Fatalf("json %q: %v", out, err)
			}
		}},
		{name: "kill unknown vm", args: []string{"kill", "nope"}, wantCode: 1, wantErr: `vm "nope": not found`},
		{name: "delete-scaleset", args: []string{"github", "delete-scaleset", "small"}, wantOut: []string{"small: scale set deleted"},
			check: func(t *testing.T, _ string) {
				b.mu.Lock()
				defer b.mu.Unlock()
				if len(b.deleted) != 1 || b.deleted[0] != "small" {
					t.Errorf("deleted %v", b.deleted)
				}
			}},
		{name: "delete-scaleset of a webhook pool", args: []string{"github", "delete-scaleset", "big"}, wantCode: 1,
			wantErr: "owns no demand source"},
		{name: "delete-scaleset unknown pool", args: []string{"github", "delete-scaleset", "nope"}, wantCode: 1, wantErr: `pool "nope": not found`},
		{name: "socket and url", args: []string{"ps", "--url", "http://127.0.0.1:1"}, wantCode: 1, wantErr: "not both"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := run(append(tc.args, "--socket", sock)...)
			if code != tc.wantCode {
				t.Fatalf("exit %d, want %d; stdout:\n%s\nstderr:\n%s", code, tc.wantCode, out, errOut)
			}
			if tc.wantErr != "" && !strings.Contains(errOut, tc.wantErr) {
				t.Fatalf("stderr %q does not contain %q", errOut, tc.wantErr)
			}
			lines := normalise(out)
			for _, want := range tc.wantOut {
				if !containsLine(lines, want) {
					t.Fatalf("stdout has no line %q:\n%s", want, out)
				}
			}
			if tc.check != nil {
				tc.check(t, out)
			}
		})
	}
	if len(b.killed) != 2 {
		t.Fatalf("killed %v, want vm2 and vm1", b.killed)
	}
}

func normalise(out string) []string {
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		lines = append(lines, strings.Join(strings.Fields(l), " "))
	}
	return lines
}

func containsLine(lines []string, want string) bool {
	for _, l := range lines {
		if l == want {
			return true
		}
	}
	return false
}

// TestClientSocketFromEnv: FIREACTIONS_SOCKET replaces the default.
func TestClientSocketFromEnv(t *testing.T) {
	clearClientEnv(t)
	sock := serveSocket(t, newAPIBackend(t.TempDir()))
	t.Setenv(envSocket, sock)
	if code, out, errOut := run("ps"); code != 0 || !strings.Contains(out, "vm1") {
		t.Fatalf("exit %d; stdout %q stderr %q", code, out, errOut)
	}
	t.Setenv(envSocket, filepath.Join(t.TempDir(), "none.sock"))
	code, _, errOut := run("ps")
	if code != 1 || !strings.Contains(errOut, "cannot reach the fireactions API") {
		t.Fatalf("missing socket: exit %d, stderr %q", code, errOut)
	}
}

// TestClientOverTCP: with --url the client sends the token from
// --token-file; a wrong or missing token is refused with the server's
// message.
func TestClientOverTCP(t *testing.T) {
	clearClientEnv(t)
	b := newAPIBackend(t.TempDir())
	srv := httptest.NewServer(api.NewHandler(api.Options{Backend: b, Tokens: []string{"s3cret-token"}}, true))
	defer srv.Close()
	dir := t.TempDir()
	good := filepath.Join(dir, "good")
	bad := filepath.Join(dir, "bad")
	os.WriteFile(good, []byte("s3cret-token\n"), 0o600)
	os.WriteFile(bad, []byte("wrong-token\n"), 0o600)

	cases := []struct {
		name     string
		args     []string
		wantCode int
		wantOut  string
		wantErr  string
	}{
		{"right token", []string{"pools", "ls", "--url", srv.URL, "--token-file", good}, 0, "small", ""},
		{"right token ps", []string{"ps", "--url", srv.URL + "/", "--token-file", good}, 0, "vm1", ""},
		{"wrong token", []string{"pools", "ls", "--url", srv.URL, "--token-file", bad}, 1, "", "unauthorized"},
		{"no token", []string{"ps", "--url", srv.URL}, 1, "", "unauthorized"},
		{"unknown vm", []string{"kill", "nope", "--url", srv.URL, "--token-file", good}, 1, "", `vm "nope": not found`},
		{"missing token file", []string{"ps", "--url", srv.URL, "--token-file", filepath.Join(dir, "none")}, 1, "", "token file"},
		{"bad url", []string{"ps", "--url", "ftp://x"}, 1, "", "want http(s)://"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := run(tc.args...)
			if code != tc.wantCode {
				t.Fatalf("exit %d, want %d; stdout %q stderr %q", code, tc.wantCode, out, errOut)
			}
			if !strings.Contains(out, tc.wantOut) || !strings.Contains(errOut, tc.wantErr) {
				t.Fatalf("stdout %q stderr %q; want %q and %q", out, errOut, tc.wantOut, tc.wantErr)
			}
			if strings.Contains(out+errOut, "s3cret") {
				t.Fatal("the token was printed")
			}
		})
	}

	t.Run("url and token file from env", func(t *testing.T) {
		t.Setenv(envURL, srv.URL)
		t.Setenv(envTokenFile, good)
		if code, out, errOut := run("ps"); code != 0 || !strings.Contains(out, "vm1") {
			t.Fatalf("exit %d; stdout %q stderr %q", code, out, errOut)
		}
	})
}

// TestLogsFollow: `logs -f` prints what the VM writes and exits 0 when
// the VM ends.
func TestLogsFollow(t *testing.T) {
	clearClientEnv(t)
	b := newAPIBackend(t.TempDir())
	sock := serveSocket(t, b)
	var out, errb hosttest.SyncBuffer
	done := make(chan int, 1)
	go func() { done <- Main([]string{"logs", "vm1", "-f", "--tail", "1", "--socket", sock}, &out, &errb) }()

	waitFor := func(want string) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); !strings.Contains(out.String(), want); {
			if time.Now().After(deadline) {
				t.Fatalf("output %q never contained %q; stderr %q", out.String(), want, errb.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitFor("runner ready\n")
	f, err := os.OpenFile(b.consoles["vm1"], os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("job 42 started\n")
	f.Close()
	waitFor("job 42 started\n")
	os.Remove(b.consoles["vm1"])
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("exit %d; stderr %q", code, errb.String())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("logs -f did not end when the VM's log went away")
	}
	if got := out.String(); got != "runner ready\njob 42 started\n" {
		t.Fatalf("output %q", got)
	}
}

func TestFormatAge(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0: "0s", 45 * time.Second: "45s", 192 * time.Second: "3m12s",
		2*time.Hour + 5*time.Minute + 9*time.Second: "2h5m", 76 * time.Hour: "3d4h", -time.Second: "0s",
	} {
		if got := formatAge(d); got != want {
			t.Errorf("formatAge(%v) = %q, want %q", d, got, want)
		}
	}
}
