package agent

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
)

// DefaultPath is the runner's PATH when its environment sets none.
const DefaultPath = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"

// runnerPrefix starts every console line of the runner's output.
const runnerPrefix = "[runner] "

// After the runner exits, processes it left behind may still hold its
// output. The agent keeps copying while output keeps coming, and stops once
// it has been quiet for outputQuiet, or after outputMax at most.
const (
	outputQuiet = 250 * time.Millisecond
	outputMax   = 5 * time.Second
)

// runRunner starts the runner as its user, copies its output to the console
// while watching for the ready line, waits for it and reports its exit.
func (a *Agent) runRunner(ctx context.Context, r agentproto.Runner, q *reportQueue) error {
	cmd, err := runnerCommand(a.Root, r)
	if err != nil {
		return err
	}
	out, w, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("starting runner: %w", err)
	}
	cmd.Stdout, cmd.Stderr = w, w
	b := a.budget()
	err = a.Sys.StartProcess(cmd)
	w.Close()
	if err != nil {
		out.Close()
		return fmt.Errorf("starting runner %s: %w", cmd.Path, err)
	}
	stopMover := a.budgetRunner(ctx, b, cmd.Process.Pid)
	q.add(agentproto.Report{Event: agentproto.EventRunnerStarted})
	var jobRE *regexp.Regexp
	if r.JobPattern != "" {
		if jobRE, err = regexp.Compile(r.JobPattern); err != nil || jobRE.NumSubexp() < 1 {
			a.logf("job pattern %q unusable (%v): the job's id is not reported", r.JobPattern, err)
			jobRE = nil
		}
	}
	copied := make(chan struct{})
	var progress atomic.Int64
	go func() {
		defer close(copied)
		copyLines(out, a.con, &progress,
			marker{line: r.ReadyLine, fire: func([]byte) {
				a.removeReadFiles(r)
				q.add(agentproto.Report{Event: agentproto.EventRunnerReady})
			}},
			marker{line: r.BusyLine, fire: func(line []byte) {
				q.add(agentproto.Report{Event: agentproto.EventJobStarted, Job: jobID(jobRE, line)})
			}},
		)
	}()

	kill := context.AfterFunc(ctx, func() {
		a.logf("cancelled: killing the runner's session")
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // Setsid: its pid is its group's
	})
	ws, err := a.Sys.WaitProcess(cmd)
	kill()
	exited := a.Sys.Uptime()
	stopMover()
	// Once the exit is reported (queued: sent concurrently), the job's
	// leftovers go, so that the VM powers off soon even after a fork bomb:
	// its cgroup at once, then whatever of the user's is left outside it.
	defer func() {
		a.killBudget(b)
		if n := a.Sys.KillUser(filepath.Join(a.Root, "proc"), r.UID); n > 0 {
			a.logf("killed %d leftover processes of user %s", n, r.User)
		}
	}()
	if !waitQuiet(copied, &progress, outputQuiet, outputMax) {
		a.logf("the runner's leftover processes still hold its output; no longer copying it")
	}
	out.Close()
	<-copied
	if err != nil {
		return fmt.Errorf("waiting for runner: %w", err)
	}
	code, msg := exitCode(ws)
	q.add(agentproto.Report{Event: agentproto.EventRunnerExited, Uptime: exited, ExitCode: code, Message: msg})
	return nil
}

// waitQuiet waits for done, but gives up once progress has not moved for
// quiet, or after limit. It reports whether done came.
func waitQuiet(done <-chan struct{}, progress *atomic.Int64, quiet, limit time.Duration) bool {
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	tick := time.NewTicker(quiet / 5)
	defer tick.Stop()
	last, since := progress.Load(), time.Now()
	for {
		select {
		case <-done:
			return true
		case <-deadline.C:
			return false
		case now := <-tick.C:
			if n := progress.Load(); n != last {
				last, since = n, now
			} else if now.Sub(since) >= quiet {
				return false
			}
		}
	}
}

// runnerCommand prepares the runner's process: its user's credentials
// (no supplementary groups), its own session, its work directory, and its
// environment.
func runnerCommand(root string, r agentproto.Runner) (*exec.Cmd, error) {
	env := runnerEnv(r)
	bin, err := lookPath(r.Command[0], envValue(env, "PATH"))
	if err != nil {
		return nil, fmt.Errorf("finding runner command: %w", err)
	}
	return &exec.Cmd{
		Path: bin,
		Args: r.Command,
		Env:  env,
		Dir:  filepath.Join(root, r.WorkDir),
		SysProcAttr: &syscall.SysProcAttr{
			Setsid:     true,
			Credential: &syscall.Credential{Uid: uint32(r.UID), Gid: uint32(r.GID), Groups: []uint32{}},
		},
	}, nil
}

// runnerEnv is Runner.Env plus HOME, USER and PATH where it lacks them.
func runnerEnv(r agentproto.Runner) []string {
	env := append([]string(nil), r.Env...)
	for _, kv := range [][2]string{{"HOME", r.Home}, {"USER", r.User}, {"PATH", DefaultPath}} {
		if _, ok := lookupEnv(env, kv[0]); !ok {
			env = append(env, kv[0]+"="+kv[1])
		}
	}
	return env
}

func lookupEnv(env []string, key string) (string, bool) {
	for i := len(env) - 1; i >= 0; i-- {
		if k, v, ok := strings.Cut(env[i], "="); ok && k == key {
			return v, true
		}
	}
	return "", false
}

func envValue(env []string, key string) string {
	v, _ := lookupEnv(env, key)
	return v
}

// lookPath finds name in the runner's PATH (not the agent's, which the
// kernel leaves unset).
func lookPath(name, pathEnv string) (string, error) {
	if strings.Contains(name, "/") {
		return name, nil
	}
	for _, dir := range filepath.SplitList(pathEnv) {
		if dir == "" {
			continue
		}
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found in PATH %s", name, pathEnv)
}

// copyLines writes each line of r to the console with the runner prefix,
// and calls ready once, on the first line that contains readyLine. Very
// long lines are cut into pieces rather than held. It counts each read and
// each line written in progress.
func copyLines(r io.Reader, con *console, progress *atomic.Int64, markers ...marker) {
	br := bufio.NewReaderSize(progressReader{r, progress}, 64<<10)
	seen := make([]bool, len(markers))
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			text := bytes.TrimSuffix(line, []byte("\n"))
			con.line(runnerPrefix, text)
			progress.Add(1)
			for i, m := range markers {
				if !seen[i] && m.line != "" && bytes.Contains(text, []byte(m.line)) {
					seen[i] = true
					m.fire(text)
				}
			}
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return
		}
	}
}

// marker is a line of the runner's output that means something: the first
// line containing it fires once, with that line.
type marker struct {
	line string
	fire func(line []byte)
}

// maxJobID bounds the job id a report carries.
const maxJobID = 64

// jobID is re's first group in line: the forge's id of the runner's job,
// or "" when re is nil, does not match, or the id is implausibly long.
func jobID(re *regexp.Regexp, line []byte) string {
	if re == nil {
		return ""
	}
	m := re.FindSubmatch(line)
	if m == nil || len(m[1]) > maxJobID {
		return ""
	}
	return string(m[1])
}

// progressReader counts reads.
type progressReader struct {
	r io.Reader
	n *atomic.Int64
}

func (p progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.n.Add(1)
	return n, err
}

// exitCode is the runner's exit code, 128+n for signal n as shells do,
// with a message for the signal case.
func exitCode(ws syscall.WaitStatus) (int, string) {
	switch {
	case ws.Exited():
		return ws.ExitStatus(), ""
	case ws.Signaled():
		return 128 + int(ws.Signal()), fmt.Sprintf("killed by signal %d (%v)", int(ws.Signal()), ws.Signal())
	default:
		return -1, fmt.Sprintf("unexpected wait status %#x", uint32(ws))
	}
}
