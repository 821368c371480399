// Command forgejo-runner is a stand-in for Forgejo's runner in the
// end-to-end tests, where the real one cannot be built: its module
// (code.forgejo.org/forgejo/runner) is not on the Go module proxy. It
// takes the command line the driver gives forgejo-runner, "one-job
// --config FILE", and runs Gitea's runner, which speaks the same runner
// protocol, from act_runner beside it: "daemon --once --config FILE" on
// the same config and .runner file. Its log is act_runner's with
// forgejo-runner's ready line ("declared successfully", where act_runner
// says "declare successfully").
//
// Unlike forgejo-runner's one-job, which asks for a task once and exits
// when there is none, act_runner's --once keeps asking until it gets one.
package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

// parse takes forgejo-runner's one-job command line, the config file
// given with --config or -c before or after the command.
func parse(args []string) (config string, err error) {
	cmd := ""
	for i := 0; i < len(args); i++ {
		switch a := args[i]; {
		case a == "--config" || a == "-c":
			if i+1 == len(args) {
				return "", errors.New("--config needs a file")
			}
			config = args[i+1]
			i++
		case strings.HasPrefix(a, "--config="):
			config = strings.TrimPrefix(a, "--config=")
		case cmd == "":
			cmd = a
		default:
			return "", fmt.Errorf("unexpected argument %q", a)
		}
	}
	if cmd != "one-job" {
		return "", fmt.Errorf("the stand-in runs only one-job, not %q", cmd)
	}
	return config, nil
}

func run(args []string) int {
	config, err := parse(args)
	if err != nil {
		fmt.Fprintln(os.Stderr, "forgejo-runner (stand-in):", err)
		return 2
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "forgejo-runner (stand-in):", err)
		return 1
	}
	argv := []string{"daemon", "--once"}
	if config != "" {
		argv = append(argv, "--config", config)
	}
	cmd := exec.Command(filepath.Join(filepath.Dir(self), "act_runner"), argv...)
	stdout, _ := cmd.StdoutPipe()
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "forgejo-runner (stand-in): start act_runner:", err)
		return 1
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		for s := range sigs {
			_ = cmd.Process.Signal(s)
		}
	}()
	var wg sync.WaitGroup
	for _, p := range []struct {
		r io.Reader
		w io.Writer
	}{{stdout, os.Stdout}, {stderr, os.Stderr}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			relay(p.r, p.w)
		}()
	}
	wg.Wait()
	if err := cmd.Wait(); err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return exit.ExitCode()
		}
		return 1
	}
	return 0
}

// relay copies act_runner's lines, its ready line as forgejo-runner's.
func relay(r io.Reader, w io.Writer) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fmt.Fprintln(w, strings.Replace(sc.Text(), "declare successfully", "declared successfully", 1))
	}
}
