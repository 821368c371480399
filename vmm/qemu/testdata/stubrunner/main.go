// Command stubrunner is the runner of the real-agent warm-start test: it
// prints who and where it runs (hostname, the credential file the agent
// wrote) and the ready line the test's config names, then exits.
package main

import (
	"fmt"
	"os"
)

func main() {
	host, _ := os.Hostname()
	cred, err := os.ReadFile(os.Getenv("HOME") + "/.runner")
	fmt.Printf("stubrunner: host=%s uid=%d credential=%q (%v)\n", host, os.Getuid(), cred, err)
	fmt.Println("stubrunner: listening for jobs")
}
