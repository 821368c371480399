package github

import (
	"path"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
	"github.com/nixos-fireactions/nixos-fireactions/forge"
)

// JITConfigEnv is the environment variable the actions runner reads its
// --jitconfig argument from (any argument NAME can come as
// ACTIONS_RUNNER_INPUT_NAME; the runner removes it from its environment
// once read). It keeps the configuration off every command line.
const JITConfigEnv = "ACTIONS_RUNNER_INPUT_JITCONFIG"

// What the actions runner prints once its session is up, and when it
// takes a job ("<time>: Running job: <name>").
const (
	readyLine = "Listening for Jobs"
	busyLine  = "Running job:"
)

// guestPlan runs the image's runner (run.sh of the actions-runner layout,
// or runner.path) in its own directory with the JIT configuration in its
// environment: nothing else of the scope's reaches the VM, and no command
// line holds it.
func guestPlan(g forge.GuestOptions, jit string) agentproto.Runner {
	home := path.Join("/home", g.User)
	return agentproto.Runner{
		Forge:     "github",
		User:      g.User,
		UID:       g.UID,
		GID:       g.GID,
		Home:      home,
		WorkDir:   path.Dir(g.AgentPath),
		Command:   []string{g.AgentPath},
		Env:       []string{JITConfigEnv + "=" + jit},
		ReadyLine: readyLine,
		BusyLine:  busyLine,
	}
}
