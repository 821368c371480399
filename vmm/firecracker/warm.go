package firecracker

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
	"github.com/nixos-fireactions/nixos-fireactions/vmm"
	"github.com/nixos-fireactions/nixos-fireactions/vmm/process"
)

// Warm starts (see package warmstart) through Firecracker's snapshot API.
// A template is booted with a vsock device (Firecracker has no
// virtio-serial), paused and snapshotted (Full): the device state to
// the template's state file, the guest memory beside it (MemFile). A
// restore is a fresh Firecracker process that is given nothing but the
// snapshot (PUT /snapshot/load: the memory file as its backend, the VM's
// own TAP by network_overrides, not resumed), then resumed (PATCH /vm).
// The identity goes over the vsock device: the host connects to its unix
// socket and asks for the agent's port (Firecracker's host-initiated
// connection: "CONNECT <port>\n", answered "OK <host port>\n").
//
// Why vsock, not the MMDS or the network: the MMDS is a data store the
// guest reads over its network interface, which a template's restore
// has not configured yet (no address until the identity says it), and
// any guest process may read it later, where the identity holds the
// runner's credential; vsock is a point-to-point channel the host opens
// once, to one port, that needs no address and is gone once read.

var (
	_ vmm.Saver = (*Driver)(nil)
	_ vmm.Warm  = (*machine)(nil)
)

// SavesState implements vmm.Saver: the machines are Warm.
func (*Driver) SavesState() {}

// GuestCID is the guest's vsock context id: the first one a guest may
// have (2 is the host's).
const GuestCID = 3

// identitySock is the vsock device's unix socket, a relative path:
// Firecracker binds it in its working directory, the VM's own (its jail's
// root, or spec.Dir unjailed), and a snapshot keeps the path as given, so
// each restore binds its own and no two VMs collide.
const identitySock = "identity.sock"

// Names of a restore's snapshot files inside its jail, and of a template's
// before SaveState moves them out.
const (
	stateName = "snapshot.state"
	memName   = "snapshot.mem"
)

// MemFile is where SaveState puts the guest memory of the state it saves
// to state when the template's spec names no MemoryFile: beside it,
// state + ".mem". A restore loads both.
func MemFile(state string) string { return state + ".mem" }

// snapshotMemory is the memory file of spec's restore: its MemoryFile
// (the template's, which SaveState wrote and warmstart sealed), else
// MemFile beside its state.
func snapshotMemory(spec vmm.Spec) string {
	if spec.MemoryFile != "" {
		return spec.MemoryFile
	}
	return MemFile(spec.Restore)
}

// identityArg names the identity channel on the kernel command line of a
// template (spec.Identity): the agent listens on its vsock port.
func identityArg(spec vmm.Spec) string {
	if spec.Identity == "" {
		return ""
	}
	return " " + agentproto.IdentityChannelParam + "=" + agentproto.IdentityChannelVsock
}

// Vsock is the body of PUT /vsock: the guest's context id and the unix
// socket, as the VMM sees it, the host connects through.
type Vsock struct {
	GuestCID int    `json:"guest_cid"`
	UDSPath  string `json:"uds_path"`
}

// PutVsock adds the vsock device.
func (c *Client) PutVsock(ctx context.Context, v Vsock) error {
	return c.put(ctx, "/vsock", v)
}

// machine is a started VM: its process, and what a warm start needs.
type machine struct {
	*process.Started
	id      string
	api     string              // the API socket, on the host
	vsock   string              // the vsock device's socket, on the host; "" without one
	memory  string              // where SaveState puts the guest memory: the template's Spec.MemoryFile; "": MemFile of its state
	inVMM   func(string) string // a name in the VM's directory as the VMM sees it
	host    func(string) string // a path as the VMM sees it, on the host
	timeout time.Duration       // per API call
	// connectWait bounds SendIdentity's attempts to reach the agent's
	// port: the Driver's IdentityConnectWait, else the default.
	connectWait time.Duration
}

func (d *Driver) machine(l *launched, spec vmm.Spec) *machine {
	m := &machine{Started: l.proc, id: spec.ID, api: l.socket, vsock: l.vsock, timeout: d.CallTimeout,
		connectWait: DefaultIdentityConnectWait}
	if d.IdentityConnectWait > 0 {
		m.connectWait = d.IdentityConnectWait
	}
	if spec.Restore == "" {
		m.memory = spec.MemoryFile
	}
	if d.Jailer != nil {
		root := l.root
		m.inVMM = func(name string) string { return "/" + name }
		m.host = func(p string) string { return filepath.Join(root, filepath.Clean("/"+p)) }
	} else {
		m.inVMM = func(name string) string { return filepath.Join(spec.Dir, name) }
		m.host = func(p string) string { return p }
	}
	return m
}

// checkSnapshotFiles fails a restore whose snapshot is not all there,
// before any process starts: a clear error, and the caller boots cold.
func checkSnapshotFiles(spec vmm.Spec) error {
	if spec.Restore == "" {
		return nil
	}
	for _, f := range []string{spec.Restore, snapshotMemory(spec)} {
		st, err := os.Stat(f)
		if err != nil {
			return fmt.Errorf("firecracker: vm %s: restore: snapshot file: %w", spec.ID, err)
		}
		if !st.Mode().IsRegular() || st.Size() == 0 {
			return fmt.Errorf("firecracker: vm %s: restore: snapshot file %s is empty or not a file", spec.ID, f)
		}
		// A Full snapshot's memory file is the guest's memory, whole:
		// one cut short would load, its missing pages zero.
		if want := int64(spec.MemoryMiB) << 20; f != spec.Restore && st.Size() != want {
			return fmt.Errorf("firecracker: vm %s: restore: snapshot memory %s is %d bytes, the VM's memory %d: truncated, or another shape's", spec.ID, f, st.Size(), want)
		}
	}
	return nil
}

// load waits for the API of a fresh process and loads the snapshot into
// it: nothing else configured first (Firecracker refuses a load then),
// the VM's own TAP for the template's interface, paused until Resume.
func (d *Driver) load(ctx context.Context, l *launched, spec vmm.Spec, exited <-chan struct{}) error {
	c, err := d.api(ctx, l, exited)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.LoadSnapshot(ctx, LoadRequest(spec, l.paths)); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	// A snapshot keeps the MMDS configuration, not its data store: the
	// restore's own document is put again (never the template's).
	if d.MMDS {
		if err := c.PutMMDS(ctx, MMDSDoc(spec)); err != nil {
			return fmt.Errorf("restore: metadata: %w", err)
		}
	}
	return nil
}

// LoadRequest is the PUT /snapshot/load of a restore of spec, with the
// snapshot's files as the VMM sees them.
func LoadRequest(spec vmm.Spec, p Paths) SnapshotLoad {
	return SnapshotLoad{
		SnapshotPath:     p.State,
		MemBackend:       MemoryBackend{BackendType: "File", BackendPath: p.Memory},
		NetworkOverrides: []NetworkOverride{{IfaceID: ifaceID, HostDevName: spec.TAP}},
	}
}

// SaveState implements vmm.Warm: pause, a Full snapshot into the VM's
// own directory (its jail), moved to dst and the template's
// Spec.MemoryFile (MemFile(dst) without one), root's and 0600: the
// template's memory holds its RNG state before any restore reseeds it,
// so only the jails of its restores read them (linked in, each jail's
// group let read by an ACL entry: see acl.go). The process stays,
// paused, until killed.
func (m *machine) SaveState(ctx context.Context, dst string) error {
	if m.vsock == "" {
		return errors.New("firecracker: save state: the VM has no identity channel (Spec.Identity)")
	}
	c := NewClient(m.api, m.timeout)
	defer c.Close()
	if err := c.Pause(ctx); err != nil {
		return fmt.Errorf("firecracker: save state: %w", err)
	}
	state, mem := m.inVMM(stateName), m.inVMM(memName)
	if err := c.CreateSnapshot(ctx, SnapshotCreate{SnapshotPath: state, MemFilePath: mem, SnapshotType: "Full"}); err != nil {
		return fmt.Errorf("firecracker: save state: %w", err)
	}
	memDst := m.memory
	if memDst == "" {
		memDst = MemFile(dst)
	}
	for _, f := range []struct{ from, to string }{{m.host(state), dst}, {m.host(mem), memDst}} {
		if err := moveFile(f.from, f.to); err != nil {
			return fmt.Errorf("firecracker: save state: %w", err)
		}
	}
	return nil
}

// moveFile renames from to to (copying across file systems), makes it
// the caller's and readable by it only, and syncs it.
func moveFile(from, to string) error {
	err := os.Rename(from, to)
	if errors.Is(err, syscall.EXDEV) {
		if err = copyFile(from, to, 0o600); err == nil {
			err = os.Remove(from)
		}
	}
	if err != nil {
		return err
	}
	if err := os.Lchown(to, os.Getuid(), os.Getgid()); err != nil {
		return err
	}
	if err := os.Chmod(to, 0o600); err != nil {
		return err
	}
	// On disk before SaveState returns: warmstart.Seal syncs the state
	// file only, and a memory file a crash cut short would load.
	f, err := os.Open(to)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// Resume implements vmm.Warm: PATCH /vm Resumed.
func (m *machine) Resume(ctx context.Context) error {
	c := NewClient(m.api, m.timeout)
	defer c.Close()
	if err := c.Resume(ctx); err != nil {
		return fmt.Errorf("firecracker: restore: %w", err)
	}
	return nil
}

// maxVsockReply bounds a line read from the vsock socket: Firecracker's
// "OK <port>" and the agent's acknowledgement are short.
const maxVsockReply = 256

// SendIdentity implements vmm.Warm: a host-initiated vsock connection to
// the agent's port, one line, and the agent's acknowledgement.
func (m *machine) SendIdentity(ctx context.Context, b []byte) error {
	if m.vsock == "" {
		return errors.New("firecracker: send identity: the VM has no identity channel")
	}
	if bytes.IndexByte(b, '\n') >= 0 {
		return errors.New("firecracker: send identity: more than one line")
	}
	// The agent listens once it runs again after the restore, which
	// resets every vsock connection: connect until it answers, and again
	// when a connection ends before its answer (the agent takes the next
	// one; one that took a line and lost its answer takes none, and the
	// caller kills the VM). The connecting is bounded by the Driver's
	// IdentityConnectWait; the agent's answer, which comes once it has
	// applied the identity, by ctx. A refusal is final.
	wctx, cancel := context.WithTimeout(ctx, m.connectWait)
	defer cancel()
	line := append(bytes.Clone(b), '\n')
	defer clear(line)
	// lost: the first attempt whose connection ended after the agent
	// may have read its line, unanswered; last: the last attempt's that
	// made no connection (one the wait cut short only when none other).
	var lost, last error
	for {
		res, err := m.sendIdentityOnce(ctx, wctx, line)
		switch res {
		case acknowledged:
			return nil
		case refused, answeredOther:
			return fmt.Errorf("firecracker: send identity: %w", err)
		case unanswered:
			if ctx.Err() != nil {
				return fmt.Errorf("firecracker: send identity: %w", err)
			}
			if lost == nil {
				lost = err
			}
		case connectCut:
			if last == nil {
				last = err
			}
		case notConnected:
			last = err
		}
		select {
		case <-wctx.Done():
			if lost != nil && last != nil {
				// An agent that took its line listens no more: what
				// went wrong is the lost answer, not the refusals after.
				return fmt.Errorf("firecracker: send identity: %w; then until the connect wait ended: %w", lost, last)
			}
			return fmt.Errorf("firecracker: send identity: %w", cmp.Or(lost, last))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// attempt is how one connection of SendIdentity ended.
type attempt int

const (
	acknowledged attempt = iota // the agent applied the identity
	refused                     // the agent read it and could not apply it: final
	// notConnected: no connection to the agent's port (none listens
	// yet, or the restore reset it); the next attempt may make one.
	notConnected
	// connectCut: the connect wait ended during the connecting, which
	// says only that. Its deadline may fire before the wait's context
	// reports it (a dial's "i/o timeout"), so a timeout counts too.
	connectCut
	// unanswered: connected and the line written, no answer: the
	// connection was reset (the agent takes the next one, unless it read
	// the line), or ctx ended (the error wraps its cause; final).
	// Bounded by ctx, never by the connect wait.
	unanswered
	// answeredOther: an answer that is neither the acknowledgement nor
	// the refusal: final (no agent of ours says it).
	answeredOther
)

// sendIdentityOnce is one connection of SendIdentity, made within
// connect: line written, the agent's answer read within ctx.
func (m *machine) sendIdentityOnce(ctx, connect context.Context, line []byte) (attempt, error) {
	c, r, err := m.connectGuest(connect)
	if err != nil {
		var ne net.Error
		if connect.Err() != nil || errors.As(err, &ne) && ne.Timeout() {
			return connectCut, err
		}
		return notConnected, err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if _, err := c.Write(line); err != nil {
		return unanswered, endedBy(ctx, err)
	}
	answer, err := r.ReadString('\n')
	if strings.TrimSpace(answer) == "" {
		return unanswered, endedBy(ctx, fmt.Errorf("no acknowledgement from the guest (%v)", err))
	}
	switch err := vmm.IdentityAnswer(answer); {
	case err == nil:
		return acknowledged, nil
	case errors.Is(err, vmm.ErrIdentityRefused):
		return refused, err
	default:
		return answeredOther, err
	}
}

// endedBy is err of a connection to the agent, with ctx's cause when
// ctx has ended (its end cuts the connection short: the caller's
// deadline, not the connection's i/o timeout, is what it shows).
func endedBy(ctx context.Context, err error) error {
	if ctx.Err() == nil {
		return err
	}
	return fmt.Errorf("%w: %w", err, context.Cause(ctx))
}

// DefaultIdentityConnectWait bounds SendIdentity's attempts to reach the
// agent's vsock port when the Driver's IdentityConnectWait is 0 or less.
const DefaultIdentityConnectWait = 5 * time.Second

// connectGuest makes a host-initiated vsock connection to the agent's
// port: "CONNECT <port>\n" on the device's socket, answered "OK <host
// port>\n" (Firecracker closes the connection when no guest listens).
func (m *machine) connectGuest(ctx context.Context) (net.Conn, *bufio.Reader, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", m.vsock)
	if err != nil {
		return nil, nil, err
	}
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	r := bufio.NewReader(io.LimitReader(c, 2*maxVsockReply))
	if _, err := fmt.Fprintf(c, "CONNECT %d\n", agentproto.IdentityVsockPort); err != nil {
		stop()
		c.Close()
		return nil, nil, err
	}
	ok, err := r.ReadString('\n')
	if port, found := strings.CutPrefix(strings.TrimSuffix(ok, "\n"), "OK "); !found || !isUint(port) {
		stop()
		c.Close()
		return nil, nil, fmt.Errorf("vsock port %d: no connection to the guest (%q, %v)", agentproto.IdentityVsockPort, ok, err)
	}
	if !stop() {
		// The connect's deadline came as it was made: its past
		// deadline is set or being set on c, which the caller's write
		// would meet.
		c.Close()
		return nil, nil, fmt.Errorf("vsock port %d: connected as the wait ended: %w", agentproto.IdentityVsockPort, context.Cause(ctx))
	}
	return c, r, nil
}

func isUint(s string) bool {
	_, err := strconv.ParseUint(s, 10, 32)
	return err == nil
}
