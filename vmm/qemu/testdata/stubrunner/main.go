// Command stubrunner is the runner of the real-agent warm-start test: it
// prints who and where it runs (hostname, the credential file the agent
// wrote) and the ready line the test's config names, then exits; given
// the argument "idle", it then waits as an idle runner does (the
// benchmark's idle VMs), until the VM ends.
package main

import (
	"fmt"
	"os"
	"time"
)

func main() {
	host, _ := os.Hostname()
	cred, err := os.ReadFile(os.Getenv("HOME") + "/.runner")
	fmt.Printf("stubrunner: host=%s uid=%d credential=%q (%v)\n", host, os.Getuid(), cred, err)
	fmt.Println("stubrunner: listening for jobs")
	if len(os.Args) > 1 && os.Args[1] == "idle" {
		for {
			time.Sleep(time.Hour)
		}
	}
}
