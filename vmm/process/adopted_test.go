package process

import (
	"context"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/vmm"
)

// anyone and never are identities that claim every process and none.
var (
	anyone = Identity(func([]string, string) bool { return true })
	never  = Identity(func([]string, string) bool { return false })
)

func start(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(args[0], args[1:]...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Reap it as soon as it exits, like the init process would for an
	// orphan; the watcher must not depend on who reaps.
	go cmd.Wait()
	execed(t, cmd.Process.Pid)
	return cmd
}

// execed waits until pid shows its command line: Start returns once the
// kernel has let go of the parent in execve, which may be before the new
// program's arguments are in place (under load the tests read none).
func execed(t *testing.T, pid int) {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); Args(pid) == nil; time.Sleep(time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("pid %d shows no command line", pid)
		}
	}
}

func TestAdoptRefusesAProcessThatIsNotTheMonitor(t *testing.T) {
	cmd := start(t, "sleep", "30")
	defer cmd.Process.Kill()
	if _, err := never.Adopt("vm", cmd.Process.Pid, nil); err == nil {
		t.Fatal("a process that is not the monitor was adopted")
	}
}

func TestKillEndsTheProcessThenRunsOnExit(t *testing.T) {
	cmd := start(t, "sleep", "30")
	var exited atomic.Bool
	m, err := anyone.Adopt("vm", cmd.Process.Pid, func() { exited.Store(true) })
	if err != nil {
		t.Fatal(err)
	}
	if m.PID() != cmd.Process.Pid {
		t.Fatalf("PID %d, want %d", m.PID(), cmd.Process.Pid)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := m.Kill(ctx); err != nil {
		t.Fatal(err)
	}
	<-m.Done()
	if !exited.Load() {
		t.Error("onExit had not run when Done closed")
	}
	if m.Err() != vmm.ErrKilled {
		t.Errorf("Err = %v, want ErrKilled", m.Err())
	}
}

func TestAnExitOfItsOwnIsNoError(t *testing.T) {
	cmd := start(t, "sleep", "0.3")
	m, err := anyone.Adopt("vm", cmd.Process.Pid, nil)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-m.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("exit not seen")
	}
	if m.Err() != nil {
		t.Errorf("Err = %v after the process ended by itself", m.Err())
	}
}

// leaderWithChild starts a shell that leads its own process group, as
// Start starts every monitor, with a child in that group (what a monitor
// starts: QEMU's helpers, the jailer's firecracker); it returns the
// shell, marked as VM id's monitor, and its child's pid. The test reaps
// the shell as init would an orphan.
func leaderWithChild(t *testing.T, id string) (*exec.Cmd, int) {
	t.Helper()
	cmd := exec.Command("sh", "-c", "sleep 30 & echo $!; wait", mark(id))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 32)
	n, _ := out.Read(buf)
	child, err := strconv.Atoi(strings.TrimSpace(string(buf[:n])))
	if err != nil {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		t.Fatalf("child pid %q: %v", buf[:n], err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
	})
	if pgid, err := syscall.Getpgid(child); err != nil || pgid != cmd.Process.Pid {
		t.Fatalf("control: the child's group %d, %v; want the shell's %d", pgid, err, cmd.Process.Pid)
	}
	return cmd, child
}

// goneWithin waits until pid has no command line (gone, or a zombie
// until its new parent reaps it).
func goneWithin(t *testing.T, ctx context.Context, pid int, what string) {
	t.Helper()
	for Args(pid) != nil {
		select {
		case <-ctx.Done():
			t.Fatalf("%s (pid %d) outlived the kill", what, pid)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// An adopted monitor is killed as a started one is (Started.Kill): with
// its process group, so nothing it started outlives it.
func TestKillOfAnAdoptedMonitorEndsItsGroup(t *testing.T) {
	cmd, child := leaderWithChild(t, "adopted")
	m, err := marked.Adopt("adopted", cmd.Process.Pid, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := m.Kill(ctx); err != nil {
		t.Fatal(err)
	}
	goneWithin(t, ctx, child, "the adopted monitor's child")
}

// KillStale ends a stale monitor's process group as Kill does.
func TestKillStaleEndsTheMonitorsGroup(t *testing.T) {
	cmd, child := leaderWithChild(t, "stale-group")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := marked.KillStale(ctx, "stale-group", cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	goneWithin(t, ctx, child, "the stale monitor's child")
}
