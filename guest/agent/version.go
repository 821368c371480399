package agent

import (
	"bytes"
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
)

// versionCheckTimeout bounds the runner's version command.
const versionCheckTimeout = 30 * time.Second

// checkRunnerVersion runs the runner's version command (MinVersion) as
// its user and fails when the version is older than the plan needs or
// cannot be read: the runner would otherwise fail on flags it lacks, with
// a message that does not say why.
func (a *Agent) checkRunnerVersion(ctx context.Context, r agentproto.Runner) error {
	vc := r.MinVersion
	if vc == nil {
		return nil
	}
	re, err := regexp.Compile(vc.Pattern)
	if err != nil || re.NumSubexp() < 1 || len(vc.Command) == 0 {
		return fmt.Errorf("runner version check: unusable pattern %q or command %q", vc.Pattern, vc.Command)
	}
	rr := r
	rr.Command = vc.Command
	cmd, err := runnerCommand(a.Root, rr)
	if err != nil {
		return fmt.Errorf("runner version check: %w", err)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	ctx, cancel := context.WithTimeout(ctx, versionCheckTimeout)
	defer cancel()
	if err := a.Sys.StartProcess(cmd); err != nil {
		return fmt.Errorf("runner version check: starting %s: %w", cmd.Path, err)
	}
	stop := context.AfterFunc(ctx, func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) })
	_, err = a.Sys.WaitProcess(cmd)
	stop()
	if err != nil {
		return fmt.Errorf("runner version check: waiting for %s: %w", cmd.Path, err)
	}
	m := re.FindSubmatch(out.Bytes())
	if m == nil {
		return fmt.Errorf("runner version check: %s printed no version (want at least %s for %s)",
			strings.Join(vc.Command, " "), vc.Min, vc.Why)
	}
	got := string(m[1])
	older, err := versionBelow(got, vc.Min)
	if err != nil {
		return fmt.Errorf("runner version check: %w", err)
	}
	if older {
		return fmt.Errorf("runner %s is version %s; at least %s is needed (%s)", vc.Command[0], got, vc.Min, vc.Why)
	}
	a.logf("runner %s is version %s (at least %s)", vc.Command[0], got, vc.Min)
	return nil
}

// versionBelow reports whether dotted version v is older than min;
// missing parts count as 0 (17.1 = 17.1.0).
func versionBelow(v, min string) (bool, error) {
	a, err := versionParts(v)
	if err != nil {
		return false, err
	}
	b, err := versionParts(min)
	if err != nil {
		return false, err
	}
	for i := range max(len(a), len(b)) {
		x, y := at(a, i), at(b, i)
		if x != y {
			return x < y, nil
		}
	}
	return false, nil
}

func versionParts(v string) ([]int, error) {
	var out []int
	for _, p := range strings.Split(v, ".") {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("%q is not a dotted version", v)
		}
		out = append(out, n)
	}
	return out, nil
}

func at(xs []int, i int) int {
	if i < len(xs) {
		return xs[i]
	}
	return 0
}
