// Command fireactions-agent is the /init of a fireactions microVM: it boots
// the guest, runs the forge's runner for one job and powers the VM off. See
// package guest/agent.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/nixos-fireactions/nixos-fireactions/guest/agent"
)

func main() {
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "fireactions-agent: runs only as /init (PID 1) of a fireactions guest")
		os.Exit(2)
	}
	agent.New(os.Stdout).Boot(context.Background()) // powers off; never returns
}
