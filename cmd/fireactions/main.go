// Command fireactions is the orchestrator: it keeps pools of ephemeral
// microVMs, each running one CI job for Gitea, GitHub or GitLab.
package main

import (
	"os"

	"github.com/nixos-fireactions/nixos-fireactions/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], os.Stdout, os.Stderr))
}
