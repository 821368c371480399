package fleettest

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// clusterEnv asks a test binary started by RunClusterProcess to serve a
// cluster of that many nodes instead of running its tests.
const clusterEnv = "FLEETTEST_CLUSTER_NODES"

// ServeClusterIfAsked is for a test binary's TestMain, before m.Run:
// in the child RunClusterProcess starts, it runs the cluster, writes its
// URLs on a line of stdout, and exits when stdin closes. Elsewhere it
// returns at once.
func ServeClusterIfAsked() {
	n, err := strconv.Atoi(os.Getenv(clusterEnv))
	if err != nil || n < 1 {
		return
	}
	root, err := os.MkdirTemp("", "fleettest-cluster-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	i := 0
	c, err := startCluster(n, func() (string, error) {
		i++
		d := fmt.Sprintf("%s/n%d", root, i)
		return d, os.Mkdir(d, 0o700)
	})
	if err == nil {
		fmt.Println(strings.Join(c.URLs(), " "))
		_, _ = io.Copy(io.Discard, os.Stdin)
	}
	if c != nil {
		c.Shutdown()
	}
	os.RemoveAll(root)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	os.Exit(0)
}

// RunClusterProcess runs an n-node cluster (as RunCluster) in a child
// process of this test binary, whose TestMain calls ServeClusterIfAsked,
// and returns its URLs: this process's CPU time is then its clients'
// alone.
func RunClusterProcess(t testing.TB, n int) []string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), clusterEnv+"="+strconv.Itoa(n))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); _ = cmd.Wait() })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("nats cluster process: %v", err)
	}
	return strings.Fields(line)
}
