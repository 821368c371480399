// Command actions-runner stands in for the GitHub actions runner's run.sh
// in end-to-end tests, since the real runner (.NET) cannot run on these
// machines. Like the real one it takes its JIT configuration from
// --jitconfig or, preferably, ACTIONS_RUNNER_INPUT_JITCONFIG (which it
// removes from its environment once read), prints "Listening for Jobs",
// takes one job from the GitHub double, prints "Running job: NAME",
// "runs" it by reporting to the double what it was given (the JIT
// configuration, its arguments and environment) and exits.
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/internal/double/githubdouble"
)

const jitEnv = "ACTIONS_RUNNER_INPUT_JITCONFIG"

func main() {
	env := os.Environ() // as the process was started, for the report
	jit := os.Getenv(jitEnv)
	_ = os.Unsetenv(jitEnv)
	for i, a := range os.Args {
		if a == "--jitconfig" && i+1 < len(os.Args) {
			jit = os.Args[i+1]
		}
	}
	if jit == "" {
		fmt.Fprintln(os.Stderr, "actions-runner: no JIT configuration (--jitconfig or "+jitEnv+")")
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	err := githubdouble.RunStandIn(ctx, githubdouble.StandIn{JIT: jit, Argv: os.Args, Env: env, Out: os.Stdout})
	if err != nil {
		fmt.Fprintln(os.Stderr, "actions-runner:", err)
		os.Exit(1)
	}
}
