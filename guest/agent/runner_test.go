package agent

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
	"github.com/nixos-fireactions/nixos-fireactions/internal/hosttest"
)

func TestRunnerEnvAddsOnlyWhatIsMissing(t *testing.T) {
	r := agentproto.Runner{User: "ci", Home: "/home/ci", Env: []string{"PATH=/opt/bin", "A=b=c"}}
	got := runnerEnv(r)
	want := []string{"PATH=/opt/bin", "A=b=c", "HOME=/home/ci", "USER=ci"}
	if !slices.Equal(got, want) {
		t.Errorf("env %q, want %q", got, want)
	}
	r.Env = nil
	if got := envValue(runnerEnv(r), "PATH"); got != DefaultPath {
		t.Errorf("default PATH %q", got)
	}
}

func TestLookPathUsesTheRunnersPath(t *testing.T) {
	dir := t.TempDir()
	must(t, os.WriteFile(filepath.Join(dir, "act_runner"), []byte("#!/bin/sh\n"), 0o755))
	must(t, os.WriteFile(filepath.Join(dir, "notexec"), []byte("x"), 0o644))
	if p, err := lookPath("act_runner", "/nonexistent:"+dir); err != nil || p != filepath.Join(dir, "act_runner") {
		t.Errorf("lookPath = %q, %v", p, err)
	}
	if _, err := lookPath("notexec", dir); err == nil {
		t.Error("found a file that is not executable")
	}
	if p, _ := lookPath("/abs/prog", ""); p != "/abs/prog" {
		t.Errorf("absolute path changed to %q", p)
	}
}

func TestCopyLinesPrefixesAndSpotsEachMarkerOnce(t *testing.T) {
	long := strings.Repeat("x", 100<<10)
	in := "one\r\ntwo READY here\n" + long + "\nREADY again\nBUSY now\nlast without newline BUSY"
	con := &hosttest.SyncBuffer{}
	readies, busies := 0, 0
	copyLines(strings.NewReader(in), newConsole(con, func() time.Duration { return 0 }), new(atomic.Int64),
		marker{line: "READY", fire: func([]byte) { readies++ }}, marker{line: "BUSY", fire: func([]byte) { busies++ }})
	if readies != 1 || busies != 1 {
		t.Errorf("ready called %d times, busy %d times", readies, busies)
	}
	out := con.String()
	for _, want := range []string{"[runner] one\r\n", "[runner] two READY here\n", "[runner] READY again\n", "[runner] last without newline BUSY\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	// The long line comes out whole, in pieces that each carry the prefix.
	if strings.Count(out, "x") != len(long) || strings.Count(out, "[runner] ") != 5+2 {
		t.Errorf("long line: %d x's, %d prefixes", strings.Count(out, "x"), strings.Count(out, "[runner] "))
	}
}

func TestCopyLinesWithoutReadyLine(t *testing.T) {
	called := false
	copyLines(strings.NewReader("a\nb\n"), newConsole(nil, func() time.Duration { return 0 }), new(atomic.Int64), marker{line: "", fire: func([]byte) { called = true }})
	if called {
		t.Error("ready reported with no ReadyLine configured")
	}
}

func TestJobStartedReportCarriesTheJobIDFromTheBusyLine(t *testing.T) {
	host := newHostServer(t, "vm-token")
	cfg := testConfig(host.URL)
	cfg.Runner.Command = []string{"sh", "-c", `echo "listening for jobs"; echo 'level=info msg="task 4711 repo is ci/x"'; exit 2`}
	cfg.Runner.BusyLine = `msg="task `
	cfg.Runner.JobPattern = `msg="task (\d+) `
	root := newTestRoot(t, cfg)
	a := &Agent{Root: root, Sys: newFakeSys(t, root), Console: &hosttest.SyncBuffer{}}
	a.Boot(context.Background())
	for _, r := range host.got() {
		if r.Event == agentproto.EventJobStarted {
			if r.Job != "4711" {
				t.Fatalf("job-started report carries job %q, want 4711", r.Job)
			}
			return
		}
	}
	t.Fatalf("no job-started report in %v", host.events())
}

func TestJobIDIsBoundedAndOptional(t *testing.T) {
	re := regexp.MustCompile(`task (\d+)`)
	if got := jobID(re, []byte("task "+strings.Repeat("9", maxJobID+1))); got != "" {
		t.Errorf("an overlong id was reported: %q", got)
	}
	if got := jobID(nil, []byte("task 5")); got != "" {
		t.Errorf("no pattern, yet id %q", got)
	}
	if got := jobID(re, []byte("task 5 repo")); got != "5" {
		t.Errorf("id %q, want 5", got)
	}
}

func TestExitCodes(t *testing.T) {
	for _, c := range []struct {
		script string
		code   int
		msg    string
	}{
		{"exit 0", 0, ""},
		{"exit 7", 7, ""},
		{"kill -TERM $$", 128 + 15, "killed by signal 15"},
	} {
		cmd := exec.Command("/bin/sh", "-c", c.script)
		cmd.Run()
		code, msg := exitCode(cmd.ProcessState.Sys().(syscall.WaitStatus))
		if code != c.code || !strings.HasPrefix(msg, c.msg) {
			t.Errorf("%q: exit code %d %q, want %d %q", c.script, code, msg, c.code, c.msg)
		}
	}
}

func TestReapUntilReturnsTheRunnersStatus(t *testing.T) {
	// Two children; reapUntil must reap the other one and return the
	// runner's status (as PID 1 does with orphans).
	other := exec.Command("/bin/sh", "-c", "exit 1")
	must(t, other.Start())
	runner := exec.Command("/bin/sh", "-c", "sleep 0.1; exit 9")
	must(t, runner.Start())
	ws, err := reapUntil(runner.Process.Pid)
	if err != nil || !ws.Exited() || ws.ExitStatus() != 9 {
		t.Fatalf("status %v exited %v code %d, err %v", ws, ws.Exited(), ws.ExitStatus(), err)
	}
	other.Process.Release()
	runner.Process.Release()
}

func TestWaitQuietStopsWhenLeftoverOutputGoesQuiet(t *testing.T) {
	r, w, err := os.Pipe()
	must(t, err)
	defer w.Close() // held open, like a leftover background process
	go func() {
		for i := 0; i < 6; i++ {
			fmt.Fprintf(w, "line %d\n", i)
			time.Sleep(40 * time.Millisecond)
		}
	}()
	con := &hosttest.SyncBuffer{}
	var progress atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		copyLines(r, newConsole(con, func() time.Duration { return 0 }), &progress)
	}()
	start := time.Now()
	if waitQuiet(done, &progress, 150*time.Millisecond, 5*time.Second) {
		t.Fatal("done while the pipe is still open")
	}
	if d := time.Since(start); d < 200*time.Millisecond || d > 2*time.Second {
		t.Errorf("stopped after %s: want after the output (240 ms) plus quiet (150 ms)", d)
	}
	r.Close()
	<-done
	if !strings.Contains(con.String(), "[runner] line 5\n") {
		t.Errorf("lost output:\n%s", con)
	}
	// Endless output stops at the limit.
	var busy atomic.Int64
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
				busy.Add(1)
			}
		}
	}()
	start = time.Now()
	if waitQuiet(make(chan struct{}), &busy, 50*time.Millisecond, 300*time.Millisecond) {
		t.Fatal("done without done")
	}
	if d := time.Since(start); d < 300*time.Millisecond || d > time.Second {
		t.Errorf("endless output stopped after %s, want the 300 ms limit", d)
	}
}

// A runner file marked RemoveWhenReady (GitLab's config.toml, which
// run-single reads once when it starts) is gone once the runner has
// printed its ready line, before any job could run; the other files stay.
func TestFilesTheRunnerHasReadAreRemovedOnceItIsReady(t *testing.T) {
	host := newHostServer(t, "vm-token")
	cfg := testConfig(host.URL)
	cfg.Runner.Files = []agentproto.File{
		{Path: "/home/runner/.gitlab-runner/config.toml", Mode: 0o600, Content: []byte(`token = "glrt-secret"`), RemoveWhenReady: true},
		{Path: "/home/runner/keep.txt", Mode: 0o644, Content: []byte("kept")},
	}
	// The runner reads its credential, says it is ready, then looks for
	// the file as a job would, for up to 5 s.
	cfg.Runner.Command = []string{"/bin/sh", "-c", `cat ../.gitlab-runner/config.toml; echo; echo "Runner: listening for jobs"
for i in $(seq 50); do [ -e ../.gitlab-runner/config.toml ] || break; sleep 0.1; done
[ -e ../.gitlab-runner/config.toml ] && echo "credential still there" || echo "credential gone"
[ -e ../keep.txt ] && echo "other file kept"`}
	root := newTestRoot(t, cfg)
	con := &hosttest.SyncBuffer{}
	if err := (&Agent{Root: root, Sys: newFakeSys(t, root), Console: con}).Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	out := con.String()
	for _, want := range []string{`[runner] token = "glrt-secret"`, "[runner] credential gone", "[runner] other file kept"} {
		if !strings.Contains(out, want) {
			t.Errorf("console lacks %q:\n%s", want, out)
		}
	}
}
