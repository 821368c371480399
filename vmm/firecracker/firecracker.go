// Package firecracker is the Firecracker driver of the vmm seam: the
// production VMM, normally run through Firecracker's jailer (a chroot, an
// unprivileged uid/gid and a cgroup per VM).
//
// It talks to Firecracker with a small client of its own over the API
// socket rather than with firecracker-go-sdk. The SDK's generated client
// and models carry the whole API of its day and a process manager with its
// own opinions (jailer layout, CNI, logging); the driver needs four PUTs
// (one more per drive, two more with the MMDS).
// A client that sends only those keeps every request body in plain sight,
// which is what lets the tests hold each one to Firecracker's own API
// description (see apispec and the firecrackerdouble test double), and it adds no
// dependency.
package firecracker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
	"github.com/nixos-fireactions/nixos-fireactions/vmm"
	"github.com/nixos-fireactions/nixos-fireactions/vmm/process"
)

// BaseCmdline starts every guest's kernel command line: the serial
// console, exit on reboot (Firecracker ends when the guest resets the CPU
// through the i8042), reboot one second after a panic, no PCI scan.
const BaseCmdline = "console=ttyS0 reboot=k panic=1 pci=off"

// apiSocket is the API socket's path inside a jail; outside one it is
// fc.sock in the VM's directory.
const apiSocket = "/run/fc.sock"

// maxSocketPath is the longest unix socket path Linux accepts.
const maxSocketPath = 107

// ifaceID is the guest network interface's id in the API: the driver
// attaches one, the guest's eth0.
const ifaceID = "eth0"

// MMDSVersion is the MMDS version the driver configures: V2, which
// answers only requests carrying a session token got with a PUT, so a
// guest process that merely forwards requests (SSRF) cannot read it.
const MMDSVersion = "V2"

// vmIDPattern is what Firecracker and its jailer accept as an id.
var vmIDPattern = regexp.MustCompile(`^[A-Za-z0-9-]{1,64}$`)

// resourceIDPattern is a drive id the driver takes: it names the drive on
// the kernel command line (see DriveSerial), so no space or '='.
var resourceIDPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// Driver starts Firecracker microVMs.
type Driver struct {
	// Binary is the firecracker executable (a path, or a name looked up in
	// PATH).
	Binary string
	// Jailer runs each VM through the jailer; nil runs firecracker
	// directly (development only).
	Jailer *Jailer
	// MMDS gives each guest Firecracker's metadata service on its
	// interface (version V2), holding MMDSDoc of its spec: the VM's
	// non-secret metadata, never a credential. Off by default.
	MMDS bool
	// APITimeout bounds the wait for the API socket; 0 means 10s.
	APITimeout time.Duration
	// CallTimeout bounds each API call (0: DefaultCallTimeout): a VMM
	// that does not answer in time fails Start and is killed, so a hung
	// VMM never holds its VM in Creating, nor a drain waiting for it.
	CallTimeout time.Duration
	// IdentityConnectWait bounds a warm start's attempts to reach the
	// agent's vsock port (0 or less: DefaultIdentityConnectWait); the agent's
	// answer, which comes once it has applied the identity, is bounded
	// by the caller's context, not by this (see SendIdentity).
	IdentityConnectWait time.Duration
	Log                 *slog.Logger
	// killStart, when set, replaces the kill of a failed start's monitor
	// (its Kill): tests play a monitor that does not die.
	killStart func(ctx context.Context, m *process.Started) error
}

var (
	_ vmm.Hypervisor = (*Driver)(nil)
	_ vmm.Adopter    = (*Driver)(nil)
	_ vmm.Reaper     = (*Driver)(nil)
)

// Name implements vmm.Hypervisor.
func (d *Driver) Name() string { return "firecracker" }

func (d *Driver) log() *slog.Logger {
	if d.Log != nil {
		return d.Log
	}
	return slog.New(slog.DiscardHandler)
}

// Cmdline is the kernel command line of spec.
func Cmdline(spec vmm.Spec) string {
	if spec.Cmdline == "" {
		return BaseCmdline
	}
	return BaseCmdline + " " + spec.Cmdline
}

// Start implements vmm.Hypervisor: it starts firecracker (through the
// jailer unless Jailer is nil), configures the VM over the API and returns
// once InstanceStart succeeded, the initramfs emptied (see dropInitrd).
// With spec.Restore it loads that snapshot instead (see load): the guest
// stays paused until the machine's Resume. A start that fails once the
// VMM runs kills it (see failStart): on an error the machine is nil,
// unless that kill failed too.
func (d *Driver) Start(ctx context.Context, spec vmm.Spec) (vmm.Machine, error) {
	if err := checkSpec(spec); err != nil {
		return nil, err
	}
	if err := checkSnapshotFiles(spec); err != nil {
		return nil, err
	}
	if spec.Restore != "" && d.Jailer == nil && len(spec.Drives) > 0 {
		// The snapshot names the template's drive files by host path;
		// only a jail gives each restore its own at the same path.
		return nil, fmt.Errorf("firecracker: vm %s: a restore with drives needs the jailer", spec.ID)
	}
	start := time.Now()
	l, err := d.launch(ctx, spec)
	if err != nil {
		return nil, fmt.Errorf("firecracker: vm %s: %w", spec.ID, err)
	}
	m := l.proc
	if spec.Restore != "" {
		err = d.load(ctx, l, spec, m.Exited())
	} else {
		err = d.configure(ctx, l, spec, m.Exited())
	}
	if err != nil {
		return d.failStart(ctx, l, spec, err)
	}
	if spec.Restore == "" {
		d.dropInitrd(spec, l)
	}
	d.log().Debug("firecracker started", "vm", spec.ID, "pid", m.PID(), "jailed", d.Jailer != nil, "slot", spec.Slot, "mmds", d.MMDS,
		"restored", spec.Restore != "", "took", time.Since(start))
	return d.machine(l, spec), nil
}

// startKillTimeout bounds the kill of a failed start's monitor.
const startKillTimeout = 10 * time.Second

// failStart ends a start that failed (err) once its VMM ran: it kills
// the VMM and returns err with the VMM's last words from the console
// log. When the kill fails too the VMM may still run, as the VM's slot's
// user: failStart returns it with the error, for the caller to kill and
// to keep the slot meanwhile (see vmm.Hypervisor's Start).
func (d *Driver) failStart(ctx context.Context, l *launched, spec vmm.Spec, err error) (vmm.Machine, error) {
	kctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), startKillTimeout)
	defer cancel()
	kill := d.killStart
	if kill == nil {
		kill = func(ctx context.Context, m *process.Started) error { return m.Kill(ctx) }
	}
	if kerr := kill(kctx, l.proc); kerr != nil {
		d.log().Error("kill the failed start's firecracker; it may still run", "vm", spec.ID, "pid", l.proc.PID(), "slot", spec.Slot, "err", kerr)
		if spec.Restore == "" {
			d.dropInitrd(spec, l) // the runner's credential leaves the disk though the VMM lives
		}
		return l.proc, fmt.Errorf("firecracker: vm %s: %w; its monitor, pid %d, may still run: kill: %w%s",
			spec.ID, err, l.proc.PID(), kerr, consoleTail(spec.ConsoleLog))
	}
	// The jailer's or VMM's last words (a refusal on stderr) reach
	// the log through the console keeper: read it once the keeper
	// has them all, or after a bound should a descendant still hold
	// the pipe.
	dctx, dcancel := context.WithTimeout(kctx, consoleDrainTimeout)
	defer dcancel()
	select {
	case <-l.console:
	case <-dctx.Done():
	}
	return nil, fmt.Errorf("firecracker: vm %s: %w%s", spec.ID, err, consoleTail(spec.ConsoleLog))
}

func checkSpec(spec vmm.Spec) error {
	switch {
	case !vmIDPattern.MatchString(spec.ID):
		return fmt.Errorf("firecracker: vm id %q: 1-64 letters, digits and '-' only", spec.ID)
	case strings.HasPrefix(spec.ID, keptPrefix):
		return fmt.Errorf("firecracker: vm id %q: %q starts the names of kept jails only", spec.ID, keptPrefix)
	case spec.VCPUs < 1 || spec.VCPUs > 32 || spec.MemoryMiB < 64:
		return fmt.Errorf("firecracker: vm %s: %d vCPUs and %d MiB: want 1-32 vCPUs and at least 64 MiB", spec.ID, spec.VCPUs, spec.MemoryMiB)
	case spec.Kernel == "" || (spec.Initramfs == "" && spec.Restore == "") || spec.TAP == "" || spec.ConsoleLog == "" || spec.Dir == "":
		return fmt.Errorf("firecracker: vm %s: incomplete spec", spec.ID)
	case spec.Slot < 0:
		return fmt.Errorf("firecracker: vm %s: slot %d: want 0 or more", spec.ID, spec.Slot)
	case spec.Restore != "" && spec.Identity == "":
		// The restored guest waits on its vsock port: a restore without
		// the channel would wait for ever.
		return fmt.Errorf("firecracker: vm %s: a restore needs its identity channel (Spec.Identity)", spec.ID)
	}
	ids := map[string]bool{}
	for _, d := range spec.Drives {
		id := DriveID(d.ID)
		if !resourceIDPattern.MatchString(d.ID) || d.Path == "" || ids[id] {
			return fmt.Errorf("firecracker: vm %s: drive %q: not 1-64 letters, digits, '-' and '_', without a file, or its id %q taken", spec.ID, d.ID, id)
		}
		ids[id] = true
	}
	return nil
}

// dropInitrd empties the initramfs Firecracker booted, and removes the
// jail's link or copy of it. Firecracker opens the file at PUT
// /boot-source, reads it whole into guest memory at InstanceStart and
// never again (a guest reset ends it), but keeps it open for its life:
// removing the name alone would free no disk while the VM runs, so the
// file is truncated first. The caller removes its own name for it.
func (d *Driver) dropInitrd(spec vmm.Spec, l *launched) {
	if err := os.Truncate(l.initrd, 0); err != nil {
		d.log().Error("empty the booted initramfs", "vm", spec.ID, "path", l.initrd, "err", err)
	}
	if l.initrd == spec.Initramfs {
		return
	}
	if err := os.Remove(l.initrd); err != nil {
		d.log().Error("remove the jail's initramfs", "vm", spec.ID, "path", l.initrd, "err", err)
	}
}

// launched is a started VMM process, before its configuration.
type launched struct {
	cmd     *exec.Cmd
	proc    *process.Started // cmd, started
	socket  string           // on the host
	root    string           // the jail's root on the host; "" unjailed
	vsock   string           // the identity vsock device's socket, on the host; "" without one
	paths   Paths            // as the VMM sees them
	initrd  string           // the initramfs the VMM opens, on the host; "" for a restore
	cleanup func() error     // removes what launch made; runs once the process is gone
	console <-chan struct{}  // closed once the console log holds all the process wrote
}

func (d *Driver) launch(ctx context.Context, spec vmm.Spec) (*launched, error) {
	// Firecracker's stdout (the serial console) goes to a keeper that
	// holds the log within its cap.
	keeper, err := vmm.StartConsole(spec.ConsoleLog, spec.ConsoleMaxBytes)
	if err != nil {
		return nil, err
	}
	console := keeper.W
	defer console.Close()

	l := &launched{cleanup: func() error { return nil }, console: keeper.Done()}
	var hostFiles []string // the drives' files the VMM opens, on the host
	if d.Jailer != nil {
		j, err := d.Jailer.prepare(ctx, d.log().With("vm", spec.ID), d.Binary, spec)
		if err != nil {
			return nil, err
		}
		l.cmd = exec.Command(d.Jailer.Binary, j.args(spec, apiSocket)...)
		l.socket, l.paths, l.cleanup, l.root = j.hostPath(apiSocket), j.paths(spec), j.remove, j.root()
		if spec.Restore == "" {
			l.initrd = j.hostPath(l.paths.Initrd)
		}
		if spec.Identity != "" {
			l.vsock = j.hostPath(identitySock)
		}
		for _, p := range l.paths.Drives {
			hostFiles = append(hostFiles, j.hostPath(p))
		}
	} else {
		l.socket = filepath.Join(spec.Dir, "fc.sock")
		if err := os.Remove(l.socket); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("remove stale API socket: %w", err)
		}
		l.cmd = exec.Command(d.Binary, "--api-sock", l.socket, "--id", spec.ID)
		l.paths = HostPaths(spec)
		if spec.Restore == "" {
			l.initrd = spec.Initramfs
		}
		if spec.Identity != "" {
			// Firecracker binds the vsock device's socket where its
			// working directory (the VM's) is: see identitySock.
			l.vsock = filepath.Join(spec.Dir, identitySock)
			if err := os.Remove(l.vsock); err != nil && !errors.Is(err, os.ErrNotExist) {
				return nil, fmt.Errorf("remove stale identity socket: %w", err)
			}
		}
		hostFiles = l.paths.Drives
	}
	for _, s := range []string{l.socket, l.vsock} {
		if len(s) > maxSocketPath {
			_ = l.cleanup()
			return nil, fmt.Errorf("socket path %s is longer than %d bytes", s, maxSocketPath)
		}
	}
	if l.paths.Serials, err = driveSerials(spec, hostFiles); err != nil {
		_ = l.cleanup()
		return nil, err
	}
	// Firecracker writes the guest's serial console to its stdout.
	l.cmd.Stdout, l.cmd.Stderr = console, console
	l.cmd.Dir = spec.Dir
	// The jail and what else the VM held on the host go once the process
	// is gone.
	log := d.log().With("vm", spec.ID)
	l.proc, err = process.Start(l.cmd, "firecracker", func() {
		if err := l.cleanup(); err != nil {
			log.Error("remove the vm's jail", "err", err)
		}
	})
	if err != nil {
		_ = l.cleanup()
		return nil, fmt.Errorf("start %s: %w", l.cmd.Path, err)
	}
	return l, nil
}

// api waits (at most APITimeout) for the API socket of l and returns a
// client of it.
func (d *Driver) api(ctx context.Context, l *launched, exited <-chan struct{}) (*Client, error) {
	timeout := d.APITimeout
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := waitForSocket(wctx, l.socket, exited); err != nil {
		return nil, err
	}
	return NewClient(l.socket, d.CallTimeout), nil
}

// configure waits for the API and sends the boot requests in order.
func (d *Driver) configure(ctx context.Context, l *launched, spec vmm.Spec, exited <-chan struct{}) error {
	c, err := d.api(ctx, l, exited)
	if err != nil {
		return err
	}
	defer c.Close()
	for _, r := range BootRequests(spec, l.paths, d.MMDS) {
		if err := r.Send(ctx, c); err != nil {
			return err
		}
	}
	return nil
}

// Request is one API call of a VM's start, in the order they are sent.
type Request struct {
	Path string // PUT path
	Body any
	Send func(ctx context.Context, c *Client) error
}

// Paths are a VM's files as the VMM opens them: inside its chroot when
// jailed.
type Paths struct {
	Kernel, Initrd string
	// State and Memory are the snapshot a restore loads (spec.Restore
	// and its memory file: spec.MemoryFile, else MemFile); "" for a boot.
	State, Memory string
	Drives        []string // one per spec.Drives
	// Serials are the serials the guest reads from the drives (see
	// DriveSerial), one per spec.Drives, named to the guest on the kernel
	// command line; none: not known, nothing named.
	Serials []string
}

// HostPaths are spec's files where they are, for an unjailed VMM.
func HostPaths(spec vmm.Spec) Paths {
	p := Paths{Kernel: spec.Kernel, Initrd: spec.Initramfs}
	if spec.Restore != "" {
		p.State, p.Memory = spec.Restore, snapshotMemory(spec)
	}
	for _, d := range spec.Drives {
		p.Drives = append(p.Drives, d.Path)
	}
	return p
}

// DriveID is a drive's id as Firecracker accepts it in a path: letters,
// digits and '_' (others become '_'). It is not what the guest sees as
// the disk's serial: see DriveSerial.
func DriveID(id string) string {
	return strings.Map(func(r rune) rune {
		if r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' {
			return r
		}
		return '_'
	}, id)
}

// virtioBlkIDBytes is VIRTIO_BLK_ID_BYTES: the longest virtio block id.
const virtioBlkIDBytes = 20

// DriveSerial is the serial the guest reads from a drive Firecracker
// backs with the file at path (virtio-blk VIRTIO_BLK_T_GET_ID,
// /sys/block/vdX/serial): the file's st_dev, st_rdev and st_ino in
// decimal, run together and cut to 20 bytes, as Firecracker's block
// device makes its id when the drive is configured. Firecracker offers no
// way to set it, and the drive_id is not it.
func DriveSerial(path string) (string, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return "", fmt.Errorf("drive serial: %w", err)
	}
	id := fmt.Sprintf("%d%d%d", st.Dev, st.Rdev, st.Ino)
	return id[:min(len(id), virtioBlkIDBytes)], nil
}

// driveSerials are the serials of spec's drives, backed by files (the
// files the VMM opens, on the host). Two drives the guest could not tell
// apart fail the start: the guest must never take one disk for another.
func driveSerials(spec vmm.Spec, files []string) ([]string, error) {
	var out []string
	for i, f := range files {
		s, err := DriveSerial(f)
		if err != nil {
			return nil, fmt.Errorf("drive %s: %w", spec.Drives[i].ID, err)
		}
		if j := slices.Index(out, s); j >= 0 {
			return nil, fmt.Errorf("drives %s and %s would show the guest one serial %q", spec.Drives[j].ID, spec.Drives[i].ID, s)
		}
		out = append(out, s)
	}
	return out, nil
}

// serialArgs name each drive's serial to the guest, by the drive's id, on
// the kernel command line (agentproto.SerialParam), where the agent finds
// its disks by them.
func serialArgs(spec vmm.Spec, p Paths) string {
	var b strings.Builder
	for i, d := range spec.Drives {
		if i < len(p.Serials) && p.Serials[i] != "" {
			b.WriteString(" " + agentproto.SerialParam + d.ID + "=" + p.Serials[i])
		}
	}
	return b.String()
}

// MMDSDoc is the MMDS data store of spec: its Metadata under
// "fireactions", with vm_id always the spec's id. It holds what the
// orchestrator put in Metadata and nothing else, so no token or runner
// credential (those are in the initramfs only).
func MMDSDoc(spec vmm.Spec) MMDSDocument {
	md := make(map[string]string, len(spec.Metadata)+1)
	for k, v := range spec.Metadata {
		md[k] = v
	}
	md["vm_id"] = spec.ID
	return MMDSDocument{Fireactions: md}
}

// BootRequests are the API calls that start spec, with its files as the
// VMM sees them (and the drives' serials named on the kernel command
// line), in the order they are sent: boot source, machine, NIC,
// drives, with mmds the MMDS configuration (after the NIC it names) and
// data store, with spec.Identity the vsock device, then InstanceStart. Start sends exactly these; the tests
// check each against Firecracker's API description.
func BootRequests(spec vmm.Spec, p Paths, mmds bool) []Request {
	boot := BootSource{KernelImagePath: p.Kernel, InitrdPath: p.Initrd, BootArgs: Cmdline(spec) + serialArgs(spec, p) + identityArg(spec)}
	machine := MachineConfig{VCPUCount: spec.VCPUs, MemSizeMiB: spec.MemoryMiB, SMT: false}
	nic := NetworkInterface{IfaceID: ifaceID, HostDevName: spec.TAP, GuestMAC: spec.MAC}
	rs := []Request{
		{"/boot-source", boot, func(ctx context.Context, c *Client) error { return c.PutBootSource(ctx, boot) }},
		{"/machine-config", machine, func(ctx context.Context, c *Client) error { return c.PutMachineConfig(ctx, machine) }},
		{"/network-interfaces/" + ifaceID, nic, func(ctx context.Context, c *Client) error { return c.PutNetworkInterface(ctx, nic) }},
	}
	for i, d := range spec.Drives {
		drive := Drive{DriveID: DriveID(d.ID), PathOnHost: p.Drives[i], IsRootDevice: false, IsReadOnly: d.ReadOnly}
		rs = append(rs, Request{"/drives/" + drive.DriveID, drive, func(ctx context.Context, c *Client) error { return c.PutDrive(ctx, drive) }})
	}
	if mmds {
		cfg := MMDSConfig{Version: MMDSVersion, NetworkInterfaces: []string{ifaceID}}
		doc := MMDSDoc(spec)
		rs = append(rs,
			Request{"/mmds/config", cfg, func(ctx context.Context, c *Client) error { return c.PutMMDSConfig(ctx, cfg) }},
			Request{"/mmds", doc, func(ctx context.Context, c *Client) error { return c.PutMMDS(ctx, doc) }},
		)
	}
	if spec.Identity != "" {
		v := Vsock{GuestCID: GuestCID, UDSPath: identitySock}
		rs = append(rs, Request{"/vsock", v, func(ctx context.Context, c *Client) error { return c.PutVsock(ctx, v) }})
	}
	start := action{ActionType: "InstanceStart"}
	return append(rs, Request{"/actions", start, func(ctx context.Context, c *Client) error { return c.InstanceStart(ctx) }})
}

// consoleDrainTimeout bounds the wait for a failed start's console log
// to hold all its monitor wrote (see Start).
const consoleDrainTimeout = 5 * time.Second

// consoleTail is the end of the console log, for errors: it holds the
// jailer's and Firecracker's own complaints.
func consoleTail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil || len(b) == 0 {
		return ""
	}
	if len(b) > 600 {
		b = b[len(b)-600:]
	}
	return "; console log ends: " + strings.TrimSpace(string(b))
}
