package process

import (
	"context"
	"errors"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/vmm"
)

func TestStartLeadsItsOwnGroupAndKillEndsTheGroup(t *testing.T) {
	cmd := exec.Command("sh", "-c", "sleep 30 & echo $!; wait")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var after atomic.Bool
	p, err := Start(cmd, "sh", func() { after.Store(true) })
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 32)
	n, _ := out.Read(buf)
	child, err := strconv.Atoi(strings.TrimSpace(string(buf[:n])))
	if err != nil {
		t.Fatalf("child pid %q: %v", buf[:n], err)
	}
	if pgid, err := syscall.Getpgid(p.PID()); err != nil || pgid != p.PID() {
		t.Fatalf("pgid of the monitor = %d, %v; want its own pid %d", pgid, err, p.PID())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.Kill(ctx); err != nil {
		t.Fatal(err)
	}
	if !after.Load() {
		t.Error("afterExit had not run when Done closed")
	}
	if !errors.Is(p.Err(), vmm.ErrKilled) {
		t.Errorf("Err = %v, want ErrKilled", p.Err())
	}
	// The monitor's child was in its group: it is gone too (a zombie
	// until its new parent reaps it has no command line).
	for Args(child) != nil {
		select {
		case <-ctx.Done():
			t.Fatalf("the monitor's child %d outlived Kill", child)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func TestAnExitOfItsOwnKeepsItsStatus(t *testing.T) {
	p, err := Start(exec.Command("sh", "-c", "exit 3"), "qemu", nil)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("exit not seen")
	}
	select {
	case <-p.Exited():
	default:
		t.Error("Done closed before Exited")
	}
	if p.Err() == nil || p.Err().Error() != "qemu exited: exit status 3" {
		t.Errorf("Err = %v, want qemu exited: exit status 3", p.Err())
	}
}

func TestStartReturnsTheStartError(t *testing.T) {
	if _, err := Start(exec.Command("/nonexistent/monitor"), "qemu", nil); err == nil {
		t.Fatal("a monitor that cannot start started")
	}
}
