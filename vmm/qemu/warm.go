package qemu

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
	"github.com/nixos-fireactions/nixos-fireactions/vmm"
)

// stateFD is the saved state as QEMU reads it on a restore: the file Start
// passes open as its fd 4 (-incoming defer, then Resume's
// migrate-incoming fd:4), no shell involved.
const stateFD = 4

var _ vmm.Saver = (*Driver)(nil)

// SavesState implements vmm.Saver: the machines are Warm.
func (*Driver) SavesState() {}

// warmArgs are the devices a template and its restores share (the same
// device model: a virtio-serial port on the identity socket) and the QMP
// socket the driver saves and resumes through.
func warmArgs(spec vmm.Spec) []string {
	if spec.Identity == "" {
		return nil
	}
	args := []string{
		"-device", "virtio-serial-device,id=vs0",
		"-chardev", "socket,id=ident,path=" + escapeOpt(spec.Identity) + ",server=on,wait=off",
		"-device", "virtserialport,chardev=ident,name=" + agentproto.IdentityPort,
		"-qmp", "unix:" + escapeOpt(qmpPath(spec.Dir)) + ",server=on,wait=off",
	}
	if spec.Restore != "" {
		args = append(args, "-incoming", "defer")
	}
	return args
}

func qmpPath(dir string) string { return filepath.Join(dir, "qmp.sock") }

// dial waits for QEMU's QMP socket (QEMU creates it as it starts).
func (m *machine) dial(ctx context.Context) (*qmp, error) {
	for {
		q, err := dialQMP(ctx, qmpPath(m.dir))
		if err == nil {
			return q, nil
		}
		select {
		case <-m.Done():
			return nil, fmt.Errorf("qemu ended: %v", m.Err())
		case <-ctx.Done():
			return nil, fmt.Errorf("%w (last: %v)", ctx.Err(), err)
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// SaveState implements vmm.Warm: stop, then QEMU's migration stream to
// dst through cat (QEMU 7.2 has no file: URI), polled until complete.
// A VM whose RAM is a shared file (Spec.MemoryFile) saves its device
// state only: the file holds its memory.
func (m *machine) SaveState(ctx context.Context, dst string) error {
	if m.dir == "" {
		return errors.New("qemu: save state: the VM has no identity channel (Spec.Identity)")
	}
	if strings.ContainsAny(dst, "'\n") {
		return fmt.Errorf("qemu: save state: unusable path %q", dst)
	}
	q, err := m.dial(ctx)
	if err != nil {
		return fmt.Errorf("qemu: save state: %w", err)
	}
	defer q.Close()
	if _, err := q.do(ctx, "stop", nil); err != nil {
		return fmt.Errorf("qemu: save state: %w", err)
	}
	if m.fileMemory {
		if err := ignoreShared(ctx, q); err != nil {
			return fmt.Errorf("qemu: save state: %w", err)
		}
	}
	if _, err := q.do(ctx, "migrate", map[string]string{"uri": "exec:cat > '" + dst + "'"}); err != nil {
		return fmt.Errorf("qemu: save state: %w", err)
	}
	for {
		st, why, err := q.migration(ctx)
		switch {
		case err != nil:
			return fmt.Errorf("qemu: save state: %w", err)
		case st == "completed":
			return nil
		case st == "failed" || st == "cancelled":
			return fmt.Errorf("qemu: save state: migration %s: %s", st, why)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("qemu: save state: %w", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// ErrStateNotLoaded is what Resume's error wraps when QEMU did not load
// the saved state (a truncated stream, another version's): QEMU ended
// while loading it, or left loading in a state other than paused or
// running. Callers (and tests) match on it, not on QEMU's wording, which
// the console holds.
var ErrStateNotLoaded = errors.New("QEMU did not load the saved state; see the VM's console")

// Resume implements vmm.Warm: starts QEMU's load of the state (with
// x-ignore-shared first when the RAM is the template's file), waits
// until it is loaded (QEMU leaves "inmigrate"; a stream it cannot load
// ends QEMU), then runs the guest.
func (m *machine) Resume(ctx context.Context) error {
	q, err := m.dial(ctx)
	if err != nil {
		return fmt.Errorf("qemu: restore: %w", m.endedLoading(err))
	}
	defer q.Close()
	if m.fileMemory {
		if err := ignoreShared(ctx, q); err != nil {
			return fmt.Errorf("qemu: restore: %w", err)
		}
	}
	if _, err := q.do(ctx, "migrate-incoming", map[string]string{"uri": fmt.Sprintf("fd:%d", stateFD)}); err != nil {
		return fmt.Errorf("qemu: restore: %w", m.endedLoading(err))
	}
	for {
		st, err := q.status(ctx)
		if err != nil {
			return fmt.Errorf("qemu: restore: %w", m.endedLoading(err))
		}
		if st == "paused" || st == "running" {
			break
		}
		if st != "inmigrate" && st != "prelaunch" && st != "restore-vm" {
			return fmt.Errorf("qemu: restore: %w (state %q after loading)", ErrStateNotLoaded, st)
		}
		select {
		case <-m.Done():
			return fmt.Errorf("qemu: restore: %w (QEMU ended: %v)", ErrStateNotLoaded, m.Err())
		case <-ctx.Done():
			return fmt.Errorf("qemu: restore: %w", ctx.Err())
		case <-time.After(2 * time.Millisecond):
		}
	}
	if _, err := q.do(ctx, "cont", nil); err != nil {
		return fmt.Errorf("qemu: restore: %w", err)
	}
	return nil
}

// endedLoading is err, or, when QEMU ended meanwhile (a state it could
// not load: truncated, or another version's), ErrStateNotLoaded: its
// console has QEMU's word ("load of migration failed").
func (m *machine) endedLoading(err error) error {
	select {
	case <-m.Done():
		return fmt.Errorf("%w (QEMU ended: %v; while: %v)", ErrStateNotLoaded, m.Err(), err)
	case <-time.After(2 * time.Second):
		return err
	}
}

// SendIdentity implements vmm.Warm: one line on the identity port.
func (m *machine) SendIdentity(ctx context.Context, b []byte) error {
	if m.identity == "" {
		return errors.New("qemu: send identity: the VM has no identity channel")
	}
	if bytes.IndexByte(b, '\n') >= 0 {
		return errors.New("qemu: send identity: more than one line")
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", m.identity)
	if err != nil {
		return fmt.Errorf("qemu: send identity: %w", err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if _, err := c.Write(append(bytes.Clone(b), '\n')); err != nil {
		return fmt.Errorf("qemu: send identity: %w", err)
	}
	// QEMU drops what the guest has not taken when the socket closes:
	// the line is delivered once the guest acknowledges it.
	answer, rerr := bufio.NewReader(io.LimitReader(c, 256)).ReadString('\n')
	if err := vmm.IdentityAnswer(answer); err != nil {
		if rerr != nil {
			return fmt.Errorf("qemu: send identity: %w (reading the answer: %v)", err, rerr)
		}
		return fmt.Errorf("qemu: send identity: %w", err)
	}
	return nil
}
