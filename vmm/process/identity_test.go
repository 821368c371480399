package process

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// marked is an Identity for the tests' shells: a process is VM id's when
// its last argument (the shell's $0) is its mark.
var marked = Identity(func(args []string, id string) bool { return args[len(args)-1] == mark(id) })

func mark(id string) string { return fmt.Sprintf("fa-process-test-%d-%s", os.Getpid(), id) }

// shell runs script in sh with VM id's mark as $0; its stdin stays open
// until the test ends, so `read` holds it. The test reaps it as init
// would an orphan.
func shell(t *testing.T, id, script string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("sh", "-c", script, mark(id))
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		in.Close()
		cmd.Process.Kill()
		<-done
	})
	execed(t, cmd.Process.Pid)
	return cmd
}

// claims counts the processes that claim VM id, waiting up to 5 s for
// want of them (a forked subshell takes a moment).
func claims(t *testing.T, id string, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		n := 0
		entries, _ := os.ReadDir("/proc")
		for _, e := range entries {
			var pid int
			if _, err := fmt.Sscan(e.Name(), &pid); err == nil && marked.IsOurs(pid, id) {
				n++
			}
		}
		if n == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d processes claim vm %s, want %d", n, id, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestIsOursTellsTheMonitorByItsCommandLine(t *testing.T) {
	cmd := shell(t, "a", "read x; true")
	if !marked.IsOurs(cmd.Process.Pid, "a") {
		t.Error("the monitor of vm a is not recognised")
	}
	if marked.IsOurs(cmd.Process.Pid, "b") || marked.IsOurs(os.Getpid(), "a") {
		t.Error("a process is taken for another vm's monitor")
	}
	if args := Args(cmd.Process.Pid); len(args) != 4 || args[0] != "sh" || args[3] != mark("a") {
		t.Errorf("Args = %q", args)
	}
}

// TestFindTakesTheClaimerWhoseParentDoesNot: a forked child (here a
// subshell) carries the monitor's command line until it execs; the
// monitor is the claimer whose parent does not claim.
func TestFindTakesTheClaimerWhoseParentDoesNot(t *testing.T) {
	cmd := shell(t, "fork", "(read x; true); true")
	claims(t, "fork", 2)
	pid, err := marked.Find("fork")
	if err != nil || pid != cmd.Process.Pid {
		t.Fatalf("Find = %d, %v; want %d", pid, err, cmd.Process.Pid)
	}
	if pid, err := marked.Find("none"); err != nil || pid != 0 {
		t.Fatalf("Find(none) = %d, %v; want 0", pid, err)
	}
}

func TestFindRefusesTwoUnrelatedClaimers(t *testing.T) {
	shell(t, "twice", "read x; true")
	shell(t, "twice", "read x; true")
	claims(t, "twice", 2)
	if pid, err := marked.Find("twice"); err == nil || !strings.Contains(err.Error(), "all claim it") {
		t.Fatalf("Find = %d, %v; want an error naming both", pid, err)
	}
}

func TestKillStaleKillsOnlyTheVMsMonitor(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	other := shell(t, "other", "read x; true")
	if err := marked.KillStale(ctx, "stale", other.Process.Pid); err != nil {
		t.Fatal(err)
	}
	if err := marked.KillStale(ctx, "stale", 0); err != nil {
		t.Fatal(err)
	}
	if !marked.IsOurs(other.Process.Pid, "other") {
		t.Fatal("KillStale killed a process that is not the vm's monitor")
	}
	stale := shell(t, "stale", "read x; true")
	if err := marked.KillStale(ctx, "stale", stale.Process.Pid); err != nil {
		t.Fatal(err)
	}
	if marked.IsOurs(stale.Process.Pid, "stale") {
		t.Fatal("the stale monitor still runs after KillStale")
	}
}
