package agent

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
)

// fakeSys records the agent's effects; paths are recorded relative to root.
// It starts the runner for real, as the test's own user, after checking the
// credentials the agent asked for.
type fakeSys struct {
	t    *testing.T
	root string
	t0   time.Time

	mountErr  map[string]error // by guest target
	moduleErr error
	netErr    error
	switchErr error
	identity  []byte // the line AwaitIdentity returns
	onAwait   func() // called as AwaitIdentity begins, when set
	macErr    error  // SetMAC's

	mu        sync.Mutex
	calls     []string
	mounts    []string          // "source -> target" for sources under root
	owners    map[string][2]int // guest path -> uid, gid
	cmd       *exec.Cmd
	cred      syscall.Credential // as the agent asked for it
	poweroffs int
}

func newFakeSys(t *testing.T, root string) *fakeSys {
	return &fakeSys{t: t, root: root, t0: time.Now(), owners: map[string][2]int{}}
}

func (f *fakeSys) guest(p string) string {
	rel, err := filepath.Rel(f.root, p)
	if err != nil || strings.HasPrefix(rel, "..") {
		f.t.Errorf("path %s outside root %s", p, f.root)
	}
	return "/" + filepath.ToSlash(rel)
}

func (f *fakeSys) record(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, fmt.Sprintf(format, args...))
}

func (f *fakeSys) Mount(source, target, fstype string, flags uintptr, data string) error {
	g := f.guest(target)
	f.record("mount %s %s", fstype, g)
	if strings.HasPrefix(source, f.root) {
		f.mu.Lock()
		f.mounts = append(f.mounts, f.guest(source)+" -> "+g)
		f.mu.Unlock()
	}
	return f.mountErr[g]
}

func (f *fakeSys) LoadModule(path string) error {
	f.record("module %s", f.guest(path))
	return f.moduleErr
}

func (f *fakeSys) SetHostname(name string) error {
	f.record("hostname %s", name)
	return nil
}

func (f *fakeSys) ConfigureNetwork(ctx context.Context, n agentproto.Network) error {
	f.record("network %s %s", n.Interface, n.Address)
	return f.netErr
}

func (f *fakeSys) Chown(path string, uid, gid int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.owners[f.guest(path)] = [2]int{uid, gid}
	return nil
}

func (f *fakeSys) StartProcess(cmd *exec.Cmd) error {
	f.record("start %s", strings.Join(cmd.Args, " "))
	f.mu.Lock()
	f.cmd = cmd
	if c := cmd.SysProcAttr.Credential; c != nil {
		f.cred = *c
	}
	f.mu.Unlock()
	attr := *cmd.SysProcAttr
	attr.Credential = nil // the test's own user runs it
	cmd.SysProcAttr = &attr
	return cmd.Start()
}

func (f *fakeSys) WaitProcess(cmd *exec.Cmd) (syscall.WaitStatus, error) {
	err := cmd.Wait()
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		return 0, err
	}
	return cmd.ProcessState.Sys().(syscall.WaitStatus), nil
}

// SwitchRoot records the switch; the agent then sees the guest's files
// under newRoot.
func (f *fakeSys) SwitchRoot(newRoot string) (string, error) {
	f.record("switch_root %s", f.guest(newRoot))
	return newRoot, f.switchErr
}

func (f *fakeSys) Uptime() time.Duration { return time.Since(f.t0) }

// AwaitIdentity returns the identity line; its answer is recorded as
// "answer <agentproto.IdentityAck or IdentityRefused>", where it comes
// among the other calls.
func (f *fakeSys) AwaitIdentity(ctx context.Context) ([]byte, IdentityAnswer, error) {
	f.record("await-identity")
	if f.onAwait != nil {
		f.onAwait()
	}
	if f.identity == nil {
		<-ctx.Done() // no host ever connects
		return nil, nil, ctx.Err()
	}
	answer := func(applied bool) error {
		if applied {
			f.record("answer " + agentproto.IdentityAck)
		} else {
			f.record("answer " + agentproto.IdentityRefused)
		}
		return nil
	}
	return append([]byte(nil), f.identity...), answer, nil
}

// Reseed refuses what the real one does (see Reseed).
func (f *fakeSys) Reseed(seed []byte) error {
	f.record("reseed %d bytes", len(seed))
	if len(seed) < 32 {
		return fmt.Errorf("reseed: %d bytes of seed, want at least 32", len(seed))
	}
	return nil
}

func (f *fakeSys) SetClock(now time.Time) error {
	f.record("clock %d", now.Unix())
	if now.IsZero() {
		return fmt.Errorf("set clock: no time given")
	}
	return nil
}

func (f *fakeSys) SetMAC(iface, mac string) error {
	f.record("mac %s %s", iface, mac)
	return f.macErr
}

func (f *fakeSys) LiftProcessLimit(pid int) error {
	f.record("lift-nproc runner")
	return nil
}

func (f *fakeSys) KillUser(procDir string, uid int) int {
	f.record("kill-user %d", uid)
	return 0
}

func (f *fakeSys) PowerOff() {
	f.record("poweroff")
	f.mu.Lock()
	f.poweroffs++
	f.mu.Unlock()
}

func (f *fakeSys) callList() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

func (f *fakeSys) owner(guest string) ([2]int, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	o, ok := f.owners[guest]
	return o, ok
}
