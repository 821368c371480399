package pool

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
	"github.com/nixos-fireactions/nixos-fireactions/forge"
	"github.com/nixos-fireactions/nixos-fireactions/netplan"
	"github.com/nixos-fireactions/nixos-fireactions/vmm"
	"github.com/nixos-fireactions/nixos-fireactions/vmstate"
)

// vm is one VM's live state; its goroutine is the only writer of rec
// besides the reconcile loop's Idle → Busy step.
type vm struct {
	m     *Manager
	pool  *pool
	log   *slog.Logger
	token string

	events  chan agentproto.Report
	stopCh  chan struct{}
	reports reportLog // what of the guest's reports reaches the host log

	mu       sync.Mutex
	rec      vmstate.Record
	ready    time.Time
	stopErr  error
	stopOnce sync.Once
	// jobFailed: the job was failed at the forge already (see failJob).
	jobFailed bool
	started   time.Time // the monitor started
	root      VMRoot    // an image pool's root disks; nil for an initramfs root
}

func newVM(m *Manager, p *pool, id string) *vm {
	var tok [24]byte
	_, _ = rand.Read(tok[:])
	now := time.Now().UTC()
	v := &vm{
		m: m, pool: p,
		log:    p.log.With("vm", id),
		token:  hex.EncodeToString(tok[:]),
		events: make(chan agentproto.Report, 16),
		stopCh: make(chan struct{}),
		rec: vmstate.Record{
			ID: id, Pool: p.cfg.Name, Phase: vmstate.Creating,
			RunnerName: m.RunnerPrefix() + id, Created: now,
		},
	}
	v.rec.AgentToken = v.token
	return v
}

// adoptedVM rebuilds a VM a previous run left running and healthy; root,
// when not nil, is its image root taken back (see Roots.AdoptVM), which
// its teardown releases like a created VM's.
func adoptedVM(m *Manager, p *pool, rec vmstate.Record, root VMRoot) *vm {
	return &vm{
		m: m, pool: p,
		log:    p.log.With("vm", rec.ID),
		token:  rec.AgentToken,
		events: make(chan agentproto.Report, 16),
		stopCh: make(chan struct{}),
		rec:    rec,
		ready:  rec.Ready,
		root:   root,
	}
}

func (v *vm) phase() vmstate.Phase {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.rec.Phase
}

func (v *vm) runnerName() string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.rec.RunnerName
}

func (v *vm) readyAt() time.Time {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.ready
}

func (v *vm) snapshot() vmstate.Record {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.rec
}

// update changes the record under the lock and saves it. The sequence
// number taken under the lock keeps a slower save of an older snapshot
// from replacing a newer record. A failed save is logged and returned:
// until the monitor runs and its runner is ready, the VM is ended (create,
// serve); once it may hold a job it goes on, since recovery finds its
// monitor by its identity and the record is only lagging.
func (v *vm) update(store *vmstate.Store, f func(r *vmstate.Record)) error {
	v.mu.Lock()
	f(&v.rec)
	v.rec.Seq++
	r := v.rec
	v.mu.Unlock()
	if err := store.Save(&r); err != nil {
		v.log.Error("save vm state", "err", err)
		return err
	}
	return nil
}

func (v *vm) setPhase(store *vmstate.Store, p vmstate.Phase) {
	v.update(store, func(r *vmstate.Record) {
		r.Phase = p
		if p == vmstate.Busy && r.Busy.IsZero() {
			r.Busy = time.Now().UTC()
		}
	})
}

func (v *vm) busySince() time.Time {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.rec.Busy
}

func (v *vm) tokenOK(tok string) bool {
	return subtle.ConstantTimeCompare([]byte(tok), []byte(v.token)) == 1
}

// deliver hands a report to the VM's goroutine without blocking the
// listener; a flood of reports from one guest drops the excess.
func (v *vm) deliver(r agentproto.Report) {
	select {
	case v.events <- r:
	default:
		v.reports.dropped(v.log, r)
	}
}

// stopUnlessBusy ends the VM unless it is running a job, deciding under
// the same lock that marks it busy, so a VM whose job just started is
// never taken for idle.
func (v *vm) stopUnlessBusy(reason error) bool {
	v.mu.Lock()
	if v.rec.Phase == vmstate.Busy {
		v.mu.Unlock()
		return false
	}
	v.mu.Unlock()
	v.stop(reason)
	return true
}

// stop asks the VM to end, with the reason.
func (v *vm) stop(reason error) {
	v.stopOnce.Do(func() {
		v.mu.Lock()
		v.stopErr = reason
		v.mu.Unlock()
		close(v.stopCh)
	})
}

// run is the VM's whole life. Whatever happens, teardown removes what the
// VM had: process, runner, TAP, address, files. An adopted VM comes with
// its machine and skips creation.
func (v *vm) run(ctx context.Context, adopted vmm.Machine) {
	created := time.Now()
	machine, err := adopted, error(nil)
	if machine == nil {
		machine, err = v.create(ctx)
	}
	ok := false
	if err == nil {
		ok, err = v.serve(ctx, machine)
	}
	v.finish(machine, ok, err, created)
}

func (v *vm) finish(machine vmm.Machine, ok bool, err error, created time.Time) {
	v.teardown(machine, ok, err)
	if !v.readyAt().IsZero() || ok {
		v.m.freed(v.pool) // it held host resources, which are back
	}
	if !ok {
		reason := reasonOf(err)
		cause := shortageOf(err)
		if cause != "" {
			reason = ReasonHostResource
		}
		v.m.obs.VMFailed(v.pool.cfg.Name, reason)
		switch {
		case cause != "" && v.readyAt().IsZero():
			v.m.short(v.pool, cause, err)
		case reason != ReasonStopped && v.readyAt().IsZero():
			v.m.failed(v.pool)
		}
	}
	v.log.Info("vm gone", "ok", ok, "err", err, "lifetime", time.Since(created).Round(time.Millisecond))
}

// create makes everything the VM needs and starts its monitor.
func (v *vm) create(ctx context.Context) (vmm.Machine, error) {
	m, p := v.m, v.pool
	first := v.snapshot()
	id := first.ID
	if err := m.d.Store.Create(&first); err != nil {
		return nil, fail(ReasonSetup, err)
	}
	addr, err := m.d.Alloc.Allocate(id)
	if err != nil {
		return nil, fail(ReasonSetup, fmt.Errorf("allocate address: %w", err))
	}
	tap, err := netplan.TAPName(id)
	if err != nil {
		return nil, fail(ReasonSetup, err)
	}
	if err := v.update(m.d.Store, func(r *vmstate.Record) {
		r.Address, r.TAP, r.MAC = addr.String(), tap, netplan.NewMAC()
	}); err != nil {
		return nil, fail(ReasonSetup, err)
	}

	guest := forge.GuestOptions{
		AgentPath: p.cfg.Runner.Path, User: p.cfg.Runner.User,
		UID: p.cfg.Runner.UID, GID: p.cfg.Runner.GID, FetchInterval: p.cfg.Runner.FetchInterval,
	}
	if m.d.Roots != nil {
		// Before registering: the image decides the runner's user.
		root, ok, err := m.d.Roots.PrepareVM(ctx, p.cfg.Name, m.d.Store.Dir(id))
		if err != nil {
			return nil, fail(ReasonSetup, fmt.Errorf("prepare root disks: %w", err))
		}
		if ok {
			v.root = root
			root.Guest(&guest)
			// Recorded before the monitor starts: a restart that adopts
			// the VM leases this image again (see Manager.adoptRoot).
			if err := v.update(m.d.Store, func(r *vmstate.Record) { r.Image = root.Digest() }); err != nil {
				return nil, fail(ReasonSetup, err)
			}
		}
	}
	start := time.Now()
	runner, err := p.forge.Register(ctx, forge.RunnerSpec{
		Name:   v.runnerName(),
		Labels: p.cfg.Labels,
		Guest:  guest,
	})
	if err != nil {
		return nil, fail(ReasonRegister, fmt.Errorf("register runner: %w", err))
	}
	if err := v.update(m.d.Store, func(r *vmstate.Record) { r.RunnerID = runner.ID }); err != nil {
		return nil, fail(ReasonSetup, err)
	}
	v.log.Info("runner registered", "runner", runner.Name, "runner_id", runner.ID, "took", time.Since(start).Round(time.Millisecond))
	m.obs.Provisioned(p.cfg.Name, time.Since(first.Created))

	if err := m.d.Network.AddTAP(tap); err != nil {
		return nil, fail(ReasonSetup, err)
	}
	rec := v.snapshot()
	if err := m.d.Network.Admit(tap, rec.MAC, addr); err != nil {
		return nil, fail(ReasonSetup, err)
	}
	netCfg := m.d.Config.Network
	prefix := netip.MustParsePrefix(netCfg.CIDR)
	slot, err := netplan.Offset(prefix, addr)
	if err != nil {
		return nil, fail(ReasonSetup, fmt.Errorf("vm %s: slot: %w", id, err))
	}
	cfg := agentproto.Config{
		VMID:     id,
		Hostname: id,
		Network: agentproto.Network{
			Interface: "eth0",
			Address:   netip.PrefixFrom(addr, prefix.Bits()).String(),
			Gateway:   netCfg.Gateway,
			DNS:       netCfg.DNS,
			MTU:       netCfg.MTU,
		},
		Report: agentproto.Reporter{URL: m.d.ReportURL, Token: v.token},
		Runner: runner.Guest,
	}
	cfg.Registry = GuestRegistry(m.d.Config, &p.cfg)
	dir := m.d.Store.Dir(id)
	initrd := filepath.Join(dir, "initramfs.cpio")
	spec := vmm.Spec{
		ID: id, Dir: dir, Kernel: p.cfg.VM.Kernel, Initramfs: initrd, Cmdline: p.cfg.VM.Cmdline,
		VCPUs: p.cfg.VM.VCPUs, MemoryMiB: p.cfg.VM.MemoryMiB,
		TAP: rec.TAP, MAC: rec.MAC, ConsoleLog: filepath.Join(dir, "console.log"), ConsoleMaxBytes: m.consoleMaxBytes(),
		Slot: slot, Metadata: vmMetadata(id, p.cfg.Name, m.d.Config.HostID),
	}
	if v.root != nil {
		v.root.Apply(&spec, &cfg)
	}
	if err := m.d.Boot.WriteVM(p.cfg.Name, initrd, cfg); err != nil {
		return nil, fail(ReasonSetup, fmt.Errorf("write initramfs: %w", err))
	}
	machine, err := m.d.Hypervisor.Start(ctx, spec)
	if err != nil {
		return nil, fail(ReasonStart, err)
	}
	v.started = time.Now()
	m.obs.VMStarted(p.cfg.Name)
	if err := v.update(m.d.Store, func(r *vmstate.Record) { r.PID, r.Phase = machine.PID(), vmstate.Booting }); err != nil {
		// Returned with the machine, which teardown kills: no monitor
		// runs that its record does not know of.
		return machine, fail(ReasonSetup, err)
	}
	v.log.Info("vm booting", "pid", machine.PID(), "address", addr, "slot", spec.Slot, "tap", tap)
	return machine, nil
}

// vmMetadata is what a driver may tell the guest about itself (through
// Firecracker's MMDS): names only, never the agent token or the runner's
// credential.
func vmMetadata(id, pool, hostID string) map[string]string {
	return map[string]string{"vm_id": id, "pool": pool, "host_id": hostID}
}

// serve follows the VM until its monitor exits, a timeout fires or it is
// stopped. ok means the runner ran and exited cleanly.
func (v *vm) serve(ctx context.Context, machine vmm.Machine) (ok bool, err error) {
	t := v.pool.cfg.Timeouts
	boot := time.NewTimer(t.Boot)
	defer boot.Stop()
	var job <-chan time.Time
	if ready := v.readyAt(); !ready.IsZero() { // adopted after a restart
		boot.Stop()
		jt := time.NewTimer(max(t.Job-time.Since(ready), time.Millisecond))
		defer jt.Stop()
		job = jt.C
	}
	exitCode := -1
	for {
		select {
		case r := <-v.events:
			v.reports.log(v.log, r)
			switch r.Event {
			case agentproto.EventRunnerReady:
				if !v.readyAt().IsZero() {
					continue // a repeat (or a guest replaying reports) changes nothing
				}
				boot.Stop()
				now := time.Now()
				v.mu.Lock()
				v.ready = now
				v.mu.Unlock()
				if err := v.update(v.m.d.Store, func(rec *vmstate.Record) {
					rec.Ready, rec.ReadyUptime = now.UTC(), r.Uptime.String()
					if rec.Phase == vmstate.Booting {
						rec.Phase = vmstate.Idle
					}
				}); err != nil {
					// Ended before it takes a job: a restart would take
					// its record for a VM still booting.
					return false, fail(ReasonSetup, err)
				}
				v.m.succeeded(v.pool)
				v.m.obs.Booted(v.pool.cfg.Name, now.Sub(v.started))
				jt := time.NewTimer(t.Job)
				defer jt.Stop()
				job = jt.C
			case agentproto.EventJobStarted, agentproto.EventRunnerExited, agentproto.EventFailed:
				exitCode = v.jobReport(r, exitCode)
			}
		case <-machine.Done():
			// What the guest reported just before it powered off may still
			// wait in the channel: it decides how the VM ended.
			for pending := true; pending; {
				select {
				case r := <-v.events:
					v.reports.log(v.log, r)
					exitCode = v.jobReport(r, exitCode)
				default:
					pending = false
				}
			}
			if err := machine.Err(); err != nil {
				return false, fail(ReasonCrashed, err)
			}
			switch exitCode {
			case 0:
				return true, nil
			case -1:
				return false, fail(ReasonCrashed, errors.New("guest powered off before its runner exited"))
			default:
				return false, fail(ReasonRunner, fmt.Errorf("guest powered off; runner exit code %d", exitCode))
			}
		case <-boot.C:
			return false, fail(ReasonBootTimeout, fmt.Errorf("runner not ready within the boot timeout %s", t.Boot))
		case <-job:
			return false, fail(ReasonJobTimeout, fmt.Errorf("job timeout %s reached", t.Job))
		case <-v.stopCh:
			v.mu.Lock()
			err := v.stopErr
			v.mu.Unlock()
			return false, err
		case <-ctx.Done():
			return false, ctx.Err()
		}
	}
}

// jobReport takes a report about the VM's job (started, runner exited,
// agent failed) and returns the runner's exit code so far (-1: running).
func (v *vm) jobReport(r agentproto.Report, exitCode int) int {
	switch r.Event {
	case agentproto.EventJobStarted:
		if r.Job != "" && jobIDPattern.MatchString(r.Job) {
			v.update(v.m.d.Store, func(rec *vmstate.Record) {
				if rec.Job == "" {
					rec.Job = r.Job
				}
			})
		}
		if v.phase() == vmstate.Idle {
			v.setPhase(v.m.d.Store, vmstate.Busy)
		}
	case agentproto.EventRunnerExited:
		exitCode = r.ExitCode
		if busy := v.busySince(); !busy.IsZero() {
			v.m.obs.JobDone(v.pool.cfg.Name, time.Since(busy))
		}
		code := r.ExitCode
		v.update(v.m.d.Store, func(rec *vmstate.Record) { rec.ExitCode = &code })
		if code != 0 {
			// The runner died before its job ended: fail the job now, not
			// once the guest has powered off (its leftovers may slow that).
			ctx, cancel := context.WithTimeout(context.Background(), failJobTimeout)
			v.failJob(ctx, v.snapshot(), fmt.Errorf("runner exit code %d", code))
			cancel()
		}
	case agentproto.EventFailed:
		v.update(v.m.d.Store, func(rec *vmstate.Record) { rec.Reason = clipGuest(r.Message, maxReasonBytes) })
	}
	return exitCode
}

// teardown removes everything the VM had. It runs with its own deadline so
// a drain's cancelled context never leaves a runner behind.
func (v *vm) teardown(machine vmm.Machine, ok bool, cause error) {
	m := v.m
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if machine != nil {
		if err := machine.Kill(ctx); err != nil {
			v.log.Error("kill vm", "err", err)
		}
	}
	if v.root != nil {
		v.root.Release()
	}
	rec := v.snapshot()
	final := vmstate.Done
	if !ok {
		final = vmstate.Failed
	}
	v.update(m.d.Store, func(r *vmstate.Record) {
		r.Phase = final
		if cause != nil && r.Reason == "" {
			r.Reason = cause.Error()
		}
	})
	if !ok {
		v.failJob(ctx, rec, cause)
	}
	if rec.RunnerID != "" {
		if err := removeRunner(ctx, v.pool.forge, forge.RunnerRef{ID: rec.RunnerID, Name: rec.RunnerName}); err != nil {
			v.log.Error("remove runner", "runner", rec.RunnerName, "err", err)
		}
	}
	if rec.TAP != "" {
		if rec.MAC != "" && rec.Address != "" {
			if err := m.d.Network.Expel(rec.TAP, rec.MAC, parseAddr(rec.Address)); err != nil {
				v.log.Error("remove vm network rules", "err", err)
			}
		}
		if err := m.d.Network.DeleteTAP(rec.TAP); err != nil {
			v.log.Error("delete tap", "err", err)
		}
	}
	if rec.Address != "" {
		m.d.Alloc.Release(parseAddr(rec.Address), rec.ID)
	}
	if !ok {
		v.keepConsole()
	}
	if err := m.d.Store.Remove(rec.ID); err != nil {
		v.log.Error("remove vm directory", "err", err)
	}
}

// failure is an error with the bounded reason the failure metric uses.
type failure struct {
	reason string
	err    error
}

func (f *failure) Error() string { return f.err.Error() }
func (f *failure) Unwrap() error { return f.err }

func fail(reason string, err error) error { return &failure{reason: reason, err: err} }

// reasonOf classifies an error that ended a VM.
func reasonOf(err error) string {
	var f *failure
	if errors.As(err, &f) {
		return f.reason
	}
	return ReasonStopped
}

// removeRunner retries removal a few times: a runner left at the forge is
// a leak the user sees.
func removeRunner(ctx context.Context, f forge.Forge, ref forge.RunnerRef) error {
	var err error
	for i := 0; i < 5; i++ {
		if err = f.Remove(ctx, ref); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(time.Duration(i+1) * 500 * time.Millisecond):
		}
	}
	return err
}

// keepConsole copies a failed VM's serial console to the console
// directory, where it outlives the VM's own directory.
func (v *vm) keepConsole() {
	if v.m.d.ConsoleDir == "" {
		return
	}
	src, err := os.Open(filepath.Join(v.m.d.Store.Dir(v.rec.ID), "console.log"))
	if err != nil {
		return
	}
	defer src.Close()
	if err := os.MkdirAll(v.m.d.ConsoleDir, 0o700); err != nil {
		v.log.Error("keep console log", "err", err)
		return
	}
	path := filepath.Join(v.m.d.ConsoleDir, v.rec.ID+".log")
	// Bounded like the live log, whatever the VM's directory holds.
	if err := vmm.CopyConsole(path, src.Name(), v.m.consoleMaxBytes()); err != nil {
		v.log.Error("keep console log", "err", err)
		return
	}
	v.log.Info("console log kept", "path", path)
}

// consoleMaxBytes is the cap of each VM's console log, live and kept
// (console_logs.max_kib; 0: the driver's default).
func (m *Manager) consoleMaxBytes() int64 {
	return int64(m.d.Config.ConsoleLogs.MaxKiB) << 10
}
