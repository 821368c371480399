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
	"strings"
	"sync"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
	"github.com/nixos-fireactions/nixos-fireactions/forge"
	"github.com/nixos-fireactions/nixos-fireactions/netplan"
	"github.com/nixos-fireactions/nixos-fireactions/vmm"
	"github.com/nixos-fireactions/nixos-fireactions/vmstate"
)

// vm is one VM's live state. Its goroutine is the only writer of its
// record on disk: others (the reconcile loop's Idle → Busy step, a
// reconcile asking for a failed save to be tried again) change the record
// in memory and ask the goroutine to save it (requestSave), so no pass of
// the reconcile loop waits for a VM's file, and one file never has two
// writers. Changes made before a save is done coalesce into it: only the
// latest record is written.
//
// The writes of a VM's life, each durable (vmstate: file and directory
// synced), at most 4 when all goes well (5 when the forge's busy flag
// comes before the job-started report: see the end):
//
//  1. Create, before anything outside the orchestrator holds the VM (its
//     runner at the forge, its root disks, TAP, initramfs, monitor): a
//     barrier. A crash after any of those finds this record, which names
//     the address, TAP and MAC, and recovery removes them; the runner by
//     its name (Recover removes this host's runners no adopted VM holds).
//  2. Booting, once the monitor runs: its PID, runner id and memo (what
//     the forge's driver needs to fail the runner's job, in this run or
//     after a restart: forge.RunnerMemo) and image. Not a
//     barrier (nothing waits for it); it makes the VM adoptable. A crash
//     before it (a restore's monitor runs from before its runner's
//     registration on) leaves the record of write 1, whose monitor
//     recovery finds by the VM's identity (vmm.Finder) and ends.
//  3. Idle, the runner ready: an adopted VM is not held to its boot
//     timeout.
//  4. Busy, with the job's id (and, for a forge.JobLearner, the runner's
//     memo updated with what its driver learnt of the job): an adopted VM
//     keeps its job timeout and its job is failed at the forge if it ends
//     early.
//
// Then the VM's directory is removed (Store.Remove). The runner's exit
// code, the agent's failure and the final phase stay in memory: nothing
// after a restart reads them (a VM found dead is cleaned up whatever its
// phase), and a record that must outlive the VM says Deregistering, saved
// by deregisterLater. A fifth write happens when the forge's busy flag
// turns the VM busy (write 4, without the job's id) before its agent
// reports the job's id (write 5); TestAVMLifeWritesItsRecordAtMostFourTimes
// counts it.
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
	started  time.Time     // the monitor started (zero for an adopted VM)
	root     VMRoot        // an image pool's root disks; nil for an initramfs root
	restored bool          // restored from its pool's template (warm start), not booted
	busyCh   chan struct{} // closed when the VM turns busy: its job timeout starts
	// adopted: taken over from a previous run; bootFrom is when the
	// previous run recorded it booting, which its boot timeout counts from.
	adopted  bool
	bootFrom time.Time
	// unsaved: the last save of rec failed (a full or failing state
	// disk), so the record on disk lags; each reconcile asks the VM's
	// goroutine to save it again until a save works (see resave).
	unsaved bool
	// savedSeq is the Seq of the last record saved: rec needs saving
	// while its Seq is higher.
	savedSeq uint64
	// saveCh asks the VM's goroutine to save rec (see requestSave).
	saveCh chan struct{}
	// jobFailed: the job was failed at the forge already (see failJob).
	jobFailed bool
	// jobLearnt: the forge's driver was asked to learn of the job (see
	// learnJob). The VM's goroutine's only.
	jobLearnt bool
	// regGen is the pool's generation when its runner's registration
	// began: a refusal saying the demand source is deleted counts only if
	// no reload came since. The VM's goroutine's only.
	regGen uint64
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
		busyCh: make(chan struct{}),
		saveCh: make(chan struct{}, 1),
		rec: vmstate.Record{
			ID: id, Pool: p.cfg.Name, Phase: vmstate.Creating,
			RunnerName: m.owner.RunnerName(id), Created: now,
		},
	}
	v.rec.AgentToken = v.token
	return v
}

// adoptedVM rebuilds a VM a previous run left running; root, when not
// nil, is its image root taken back (see Roots.AdoptVM), which its
// teardown releases like a created VM's. A VM still booting then (whose
// runner may have taken a job since) goes on booting, its boot timeout
// running from bootFrom.
func adoptedVM(m *Manager, p *pool, rec vmstate.Record, root VMRoot, bootFrom time.Time) *vm {
	v := &vm{
		m: m, pool: p,
		log:      p.log.With("vm", rec.ID),
		token:    rec.AgentToken,
		events:   make(chan agentproto.Report, 16),
		stopCh:   make(chan struct{}),
		busyCh:   make(chan struct{}),
		saveCh:   make(chan struct{}, 1),
		savedSeq: rec.Seq, // saved by adopt; see there for a failed save
		rec:      rec,
		ready:    rec.Ready,
		root:     root,
		adopted:  true,
		bootFrom: bootFrom,
	}
	if rec.Phase == vmstate.Busy {
		if v.rec.Busy.IsZero() {
			v.rec.Busy = time.Now().UTC()
		}
		close(v.busyCh)
	}
	return v
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

// change changes the record in memory, under the lock, and numbers it:
// the VM's goroutine saves it with its next save (persist), which the
// caller makes or asks for (requestSave). Nothing is written here.
func (v *vm) change(f func(r *vmstate.Record)) {
	v.mu.Lock()
	was := v.rec.Phase
	f(&v.rec)
	v.rec.Seq++
	now := v.rec.Phase
	v.mu.Unlock()
	v.phaseMoved(was, now)
}

// remember changes the record in memory without numbering it: what
// nothing needs on disk (see vm) reaches it only with a later save, if
// any.
func (v *vm) remember(f func(r *vmstate.Record)) {
	v.mu.Lock()
	was := v.rec.Phase
	f(&v.rec)
	now := v.rec.Phase
	v.mu.Unlock()
	v.phaseMoved(was, now)
}

// phaseMoved keeps the pool's counts of VMs by phase as a VM's phase
// changes in memory (the counts the manager reacts to per event), and has
// the pool looked at when the VM turns busy: one VM fewer for min_idle.
// It takes no lock but the pool's counters and the demand inbox's.
func (v *vm) phaseMoved(was, now vmstate.Phase) {
	if was == now {
		return
	}
	v.pool.moved(was, now)
	if now == vmstate.Busy {
		v.pool.took.Add(1)
		// The job it took may still be counted queued until the queue
		// is read again (or the forge tells it left): min_idle only.
		v.m.demand.tell(demandEvent{pool: v.pool, minIdleOnly: true, busyAt: time.Now()})
	}
}

// update changes the record and saves it: only on the VM's own goroutine
// (or before it runs), the one writer of the VM's file.
func (v *vm) update(store *vmstate.Store, f func(r *vmstate.Record)) error {
	v.change(f)
	return v.persist(store)
}

// persist saves the record if it changed since the last save (or that
// save failed), on the VM's own goroutine: the one writer of its file, so
// the VM's records reach the disk in the order they were made; changes
// made meanwhile coalesce into one save of the latest record. The
// sequence number taken under the lock keeps a save from ever replacing a
// newer record. A failed save is logged and returned: until the monitor
// runs, the VM is ended (create); once it runs it goes on, since recovery
// finds its monitor by its identity and the record is only lagging, and
// it is saved again when the reconcile loop asks (resave).
func (v *vm) persist(store *vmstate.Store) error {
	v.mu.Lock()
	if v.rec.Seq <= v.savedSeq {
		v.mu.Unlock()
		return nil
	}
	r := v.rec
	v.mu.Unlock()
	err := store.Save(&r)
	v.saved(r.Seq, err)
	return err
}

// requestSave asks the VM's goroutine to save the record, without
// waiting: one request pending covers every change made until it is
// served.
func (v *vm) requestSave() {
	select {
	case v.saveCh <- struct{}{}:
	default:
	}
}

// resave asks the VM's goroutine to save the record again if its last
// save failed; the reconcile loop calls it for every VM, so the disk
// catches up with the orchestrator's view within one period of space
// coming back. It does no file I/O itself.
func (v *vm) resave() {
	v.mu.Lock()
	unsaved := v.unsaved
	v.mu.Unlock()
	if unsaved {
		v.requestSave()
	}
}

// saved notes how saving the record numbered seq went. The first failure
// is logged at ERROR, the repeats of the same outage at DEBUG, and the
// save that brings the disk level with the record again at INFO.
func (v *vm) saved(seq uint64, err error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if err != nil {
		if !v.unsaved {
			v.log.Error("save vm state; saving it again each reconcile", "phase", v.rec.Phase, "err", err)
			v.m.obs.RecordUnsaved(v.pool.cfg.Name)
		} else {
			v.log.Debug("save vm state again", "phase", v.rec.Phase, "err", err)
		}
		v.unsaved = true
		return
	}
	// Save wrote seq or found a newer record saved: the disk holds the
	// record as of seq. A newer change not saved yet keeps it unsaved.
	v.savedSeq = max(v.savedSeq, seq)
	if v.unsaved && seq >= v.rec.Seq {
		v.unsaved = false
		v.log.Info("vm state saved again", "phase", v.rec.Phase)
	}
}

// turnBusy marks r, the VM's record under its lock, busy: once, since
// Busy is set once.
func (v *vm) turnBusy(r *vmstate.Record) {
	r.Phase = vmstate.Busy
	if r.Busy.IsZero() {
		r.Busy = time.Now().UTC()
		close(v.busyCh)
	}
}

// markBusy turns an idle VM busy, as its forge reported, for the
// reconcile loop: in memory at once (under the lock stopUnlessBusy
// decides under, so the VM is never taken for idle again), on disk by
// the VM's goroutine, which closing busyCh wakes (serve). It reports
// whether the VM was idle.
func (v *vm) markBusy() bool {
	v.mu.Lock()
	if v.rec.Phase != vmstate.Idle {
		v.mu.Unlock()
		return false
	}
	v.turnBusy(&v.rec)
	v.rec.Seq++
	v.mu.Unlock()
	v.phaseMoved(vmstate.Idle, vmstate.Busy)
	return true
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
	gone := !ok && errors.Is(err, forge.ErrDemandSourceDeleted)
	if gone {
		// Before the VM leaves the counts: no pass may start another;
		// unless a reload since the registration began handed the
		// scope out again.
		v.m.sourceDeleted(v.pool, v.regGen)
	}
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
		case gone: // no back-off: the pool starts nothing until a reload
		case reason != ReasonStopped && v.readyAt().IsZero():
			v.m.failed(v.pool)
		}
	}
	level := slog.LevelInfo
	if !ok && reasonOf(err) != ReasonStopped {
		level = slog.LevelWarn // a VM that failed: its error says why
	}
	v.log.Log(context.Background(), level, "vm gone", "ok", ok, "err", err, "lifetime", time.Since(created).Round(time.Millisecond))
}

// poweredOffEarly says why a guest powered off before its runner exited,
// as far as the guest told: the failure its agent reported, else the
// agent's last "fatal:" line on the serial console (its report never
// reaches the host when the guest's network did not come up, as with a
// kernel that lacks virtio_net). Both are the guest's words, clipped.
func (v *vm) poweredOffEarly() error {
	const early = "guest powered off before its runner exited"
	if reason := v.snapshot().Reason; reason != "" {
		return fmt.Errorf("%s; its agent reported: %s", early, reason)
	}
	if line := lastFatal(filepath.Join(v.m.d.Store.Dir(v.rec.ID), "console.log")); line != "" {
		return fmt.Errorf("%s; its console says: %s", early, line)
	}
	return errors.New(early + " (nothing on its console says why)")
}

// consoleTail is how much of the end of a console log lastFatal reads.
const consoleTail = 16 << 10

// lastFatal is the message of the last "[agent +1.234s] fatal: …" line in
// the end of a console log, clipped; "" when there is none.
func lastFatal(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	buf := make([]byte, consoleTail)
	off := int64(0)
	if fi, err := f.Stat(); err == nil && fi.Size() > consoleTail {
		off = fi.Size() - consoleTail
	}
	n, _ := f.ReadAt(buf, off)
	lines := strings.Split(string(buf[:n]), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if _, msg, ok := strings.Cut(lines[i], "] fatal: "); ok && strings.HasPrefix(lines[i], "[agent +") {
			return clipGuest(strings.TrimSpace(msg), maxReasonBytes)
		}
	}
	return ""
}

// create makes everything the VM needs and starts its monitor.
func (v *vm) create(ctx context.Context) (vmm.Machine, error) {
	m, p := v.m, v.pool
	id := v.rec.ID
	tap, err := netplan.TAPName(id)
	if err != nil {
		return nil, fail(ReasonSetup, err)
	}
	addr, err := m.d.Alloc.Allocate(id)
	if err != nil {
		return nil, fail(ReasonSetup, fmt.Errorf("allocate address: %w", err))
	}
	// The address is the allocator's (in memory) until the record says
	// so; teardown releases it whatever happens next.
	v.change(func(r *vmstate.Record) { r.Address, r.TAP, r.MAC = addr.String(), tap, netplan.NewMAC() })
	first := v.snapshot()
	// Write 1, a barrier: the record, with the address, TAP and MAC, is on
	// disk before the runner is registered, the root disks made, the TAP
	// added or the monitor started (see vm).
	if err := m.d.Store.Create(&first); err != nil {
		return nil, fail(ReasonSetup, err)
	}
	v.saved(first.Seq, nil)

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
			// Saved with the monitor's PID (write 2): a restart that
			// adopts the VM leases this image again (see
			// Manager.adoptRoot); one that finds no PID recorded does not
			// adopt the VM, so needs no lease.
			v.change(func(r *vmstate.Record) { r.Image = root.Digest() })
		}
	}
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
	dir := m.d.Store.Dir(id)
	initrd := filepath.Join(dir, "initramfs.cpio")
	spec := vmm.Spec{
		ID: id, Dir: dir, Kernel: p.cfg.VM.Kernel, Initramfs: initrd, Cmdline: p.cfg.VM.Cmdline,
		VCPUs: p.cfg.VM.VCPUs, MemoryMiB: p.cfg.VM.MemoryMiB,
		TAP: rec.TAP, MAC: rec.MAC, ConsoleLog: filepath.Join(dir, "console.log"), ConsoleMaxBytes: m.consoleMaxBytes(),
		Slot: slot, Metadata: vmMetadata(id, p.cfg.Name, m.d.Config.HostID),
	}
	if v.root != nil {
		v.root.Apply(&spec, new(agentproto.Config)) // its disks; the agent's part below
	}
	// A restore's monitor starts before the runner is registered (see
	// startRestore); the runner's credential reaches its guest after,
	// with its identity. A cold boot's needs the runner in its initramfs.
	restore := v.startRestore(ctx, spec)
	if restore != nil && restore.failed != nil {
		return restore.handOff(), fail(ReasonStart, restore.failed)
	}
	start := time.Now()
	v.regGen = m.poolGen(p)
	runner, err := p.forge.Register(ctx, forge.RunnerSpec{
		Name:   v.runnerName(),
		Labels: p.cfg.Labels,
		Guest:  guest,
	})
	if err != nil {
		// A restore's monitor goes with the VM's teardown, which kills it
		// (and keeps the slot if that fails) like any other; its template
		// build is released once it is gone.
		var started vmm.Machine
		if restore != nil {
			started = restore.handOff()
		}
		return started, fail(ReasonRegister, fmt.Errorf("register runner: %w", err))
	}
	// Saved with the monitor's PID (write 2): until then a crash leaves a
	// record without a runner id, whose runner Recover removes by its
	// name, as one no adopted VM holds. The runner's memo goes with it: a
	// restart that adopts the VM fails its job with it (see failJob).
	v.change(func(r *vmstate.Record) { r.RunnerID, r.RunnerMemo = runner.ID, string(runner.Memo) })
	v.log.Info("runner registered", "runner", runner.Name, "runner_id", runner.ID, "took", time.Since(start).Round(time.Millisecond))
	m.obs.Provisioned(p.cfg.Name, time.Since(first.Created))

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
	if v.root != nil {
		v.root.Apply(new(vmm.Spec), &cfg) // the agent's part; the disks are spec's
	}
	var machine vmm.Machine
	if restore != nil {
		// A restore's boot is timed from its handover, its runner
		// registered and its monitor started: where a cold boot's
		// monitor starts.
		v.started = time.Now()
		machine, err = v.finishRestore(ctx, restore, spec.MAC, cfg)
		if err != nil {
			return machine, fail(ReasonStart, err)
		}
	}
	if machine == nil {
		if err := m.d.Boot.WriteVM(p.cfg.Name, initrd, cfg); err != nil {
			return nil, fail(ReasonSetup, fmt.Errorf("write initramfs: %w", err))
		}
		machine, err = m.d.Hypervisor.Start(ctx, spec)
		// Started or not, the monitor never opens the initramfs again (see
		// vmm.Hypervisor): it leaves the host's disk, and the runner's
		// credential with it, for the VM's whole life.
		v.dropInitramfs(initrd)
		if err != nil {
			// A machine returned with the error is a monitor Start
			// could not kill (see vmm.Hypervisor): teardown kills it,
			// and keeps its slot and record if that fails too.
			return machine, fail(ReasonStart, err)
		}
		v.started = time.Now()
	}
	m.obs.VMStarted(p.cfg.Name)
	// Write 2: the VM adoptable (see vm).
	if err := v.update(m.d.Store, func(r *vmstate.Record) { r.PID, r.Phase = machine.PID(), vmstate.Booting }); err != nil {
		// Returned with the machine, which teardown kills: no monitor
		// runs that its record does not know of.
		return machine, fail(ReasonSetup, err)
	}
	v.log.Info("vm booting", "pid", machine.PID(), "address", addr, "slot", spec.Slot, "tap", tap, "restored", v.restored)
	return machine, nil
}

// dropInitramfs removes the VM's initramfs. A failure is logged, not
// fatal: the VM runs as well, and teardown removes its directory.
func (v *vm) dropInitramfs(path string) {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		v.log.Error("remove the started vm's initramfs; it stays until the vm ends", "path", path, "err", err)
	}
}

// releaseBoot lets a monitor whose guest reads its initramfs after Start
// free the file's disk, now that the guest runs (it reported).
func (v *vm) releaseBoot(machine vmm.Machine) {
	if v.restored {
		return // its initramfs is the template's, which later restores map
	}
	r, ok := machine.(vmm.BootReleaser)
	if !ok {
		return
	}
	if err := r.ReleaseBoot(); err != nil {
		v.log.Error("release the booted initramfs; its disk stays taken until the vm ends", "err", err)
	}
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
	bootLeft := t.Boot
	if !v.bootFrom.IsZero() { // adopted while booting: the timeout goes on
		bootLeft = max(t.Boot-time.Since(v.bootFrom), time.Millisecond)
	}
	boot := time.NewTimer(bootLeft)
	defer boot.Stop()
	if !v.readyAt().IsZero() { // adopted after a restart
		boot.Stop()
	}
	// A VM adopted while booting whose boot timeout passes: what its
	// agent reported while no orchestrator ran is lost, and its runner
	// may have taken a job meanwhile. The forge knows: the VM waits for
	// the first pass that read its pool's runners (which tells it what
	// the forge knew, reconcilePool), one more boot timeout at most.
	var listed <-chan struct{}
	waitedForForge := v.bootFrom.IsZero()
	// The job timeout runs from the moment the runner took its job: an
	// idle VM is governed by the idle rule (reconcilePool), not by it.
	var job <-chan time.Time
	busy := v.busyCh
	// A VM not known busy is recycled at ready + timeouts.job: where the
	// forge has no busy flag (GitLab) a lost job-started report would
	// otherwise leave a VM running its job with no timeout, unbounded.
	var noJob <-chan time.Time
	var noJobTimer *time.Timer
	defer func() {
		if noJobTimer != nil {
			noJobTimer.Stop()
		}
	}()
	armNoJob := func() {
		if noJobTimer != nil || v.readyAt().IsZero() || !v.busySince().IsZero() {
			return
		}
		noJobTimer = time.NewTimer(max(t.Job-time.Since(v.readyAt()), time.Millisecond))
		noJob = noJobTimer.C
	}
	armNoJob()
	exitCode := -1
	// An adopted busy VM's job-started report went to the previous run,
	// which may have ended before it retired the runner.
	retiring := v.phase() == vmstate.Busy && !v.readyAt().IsZero()
	if retiring {
		v.retireRunner()
	}
	released := false // the guest's initramfs (see vmm.BootReleaser)
	// Every way the VM turns busy (its agent's report, the forge's busy
	// flag) retires its runner, once.
	retire := func() {
		if !retiring {
			retiring = true
			v.retireRunner()
		}
	}
	for {
		select {
		case <-busy:
			// Turned busy, by its agent's report or by the reconcile
			// loop (markBusy), which leaves the save to this goroutine:
			// write 4, before the forge's driver is asked of the job (a
			// crash meanwhile must find the VM busy, not idle), and what
			// it learnt in one more save (JobLearner drivers only).
			v.log.Info("vm busy", "job", v.snapshot().Job)
			v.persist(v.m.d.Store)
			v.learnJob()
			v.persist(v.m.d.Store)
			busy, noJob = nil, nil
			jt := time.NewTimer(max(t.Job-time.Since(v.busySince()), time.Millisecond))
			defer jt.Stop()
			job = jt.C
			retire()
		case <-v.saveCh:
			v.persist(v.m.d.Store)
		case r := <-v.events:
			v.reports.log(v.log, r)
			if !released {
				released = true
				v.releaseBoot(machine)
			}
			switch r.Event {
			case agentproto.EventRunnerReady:
				v.becomeReady(boot, r)
				armNoJob()
			case agentproto.EventJobStarted:
				if v.phase() == vmstate.Booting {
					// Its ready report was lost (the host restarted).
					v.becomeReady(boot, r)
				}
				exitCode = v.jobReport(r, exitCode)
				retire()
			case agentproto.EventRunnerExited, agentproto.EventFailed:
				exitCode = v.jobReport(r, exitCode)
			}
		case <-machine.Done():
			if len(v.events) > 0 {
				// Reports the guest sent before it powered off (its
				// failure, its runner's exit) are taken first.
				continue
			}
			if err := machine.Err(); err != nil {
				return false, fail(ReasonCrashed, err)
			}
			switch exitCode {
			case 0:
				return true, nil
			case -1:
				return false, fail(ReasonCrashed, v.poweredOffEarly())
			default:
				return false, fail(ReasonRunner, fmt.Errorf("guest powered off; runner exit code %d", exitCode))
			}
		case <-boot.C:
			if !waitedForForge {
				waitedForForge = true
				listed = v.pool.listed
				boot.Reset(t.Boot)
				continue
			}
			return false, fail(ReasonBootTimeout, fmt.Errorf("runner not ready within the boot timeout %s", t.Boot))
		case <-listed:
			listed = nil
			if len(v.events) > 0 || v.phase() != vmstate.Booting {
				continue // what the forge knew came first: taken next
			}
			return false, fail(ReasonBootTimeout, fmt.Errorf("runner not ready within the boot timeout %s, nor up at the forge", t.Boot))
		case <-job:
			return false, fail(ReasonJobTimeout, fmt.Errorf("job timeout %s reached", t.Job))
		case <-noJob:
			if !v.busySince().IsZero() {
				noJob = nil // turned busy meanwhile: the job timeout governs it
				continue
			}
			v.log.Warn("recycled: no job seen within timeouts.job", "job_timeout", t.Job, "ready", v.readyAt().UTC().Format(time.RFC3339))
			return false, fail(ReasonRecycled, fmt.Errorf("%w (%s)", errNoJobSeen, t.Job))
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

// errNoJobSeen ends a VM that was ready for timeouts.job without being
// known busy (see serve).
var errNoJobSeen = errors.New("recycled: no job seen within timeouts.job")

// becomeReady marks the VM's runner ready, once: a repeat (or a guest
// replaying reports) changes nothing. A failed save of the record leaves
// it unsaved, which the reconcile loop saves again (resave): the VM goes
// on, since its job may have started already (a job-started report while
// booting), and a restart adopts a VM its record says is booting too.
func (v *vm) becomeReady(boot *time.Timer, r agentproto.Report) {
	if !v.readyAt().IsZero() {
		return
	}
	boot.Stop()
	now := time.Now()
	v.mu.Lock()
	v.ready = now
	v.mu.Unlock()
	v.update(v.m.d.Store, func(rec *vmstate.Record) {
		rec.Ready = now.UTC()
		if r.Uptime > 0 {
			rec.ReadyUptime = r.Uptime.String()
		}
		if rec.Phase == vmstate.Booting {
			rec.Phase = vmstate.Idle
		}
	})
	v.m.succeeded(v.pool)
	if !v.started.IsZero() {
		v.m.obs.Booted(v.pool.cfg.Name, now.Sub(v.started))
		v.log.Info("vm ready", "took", now.Sub(v.started).Round(time.Millisecond), "restored", v.restored)
	}
}

// jobReport takes a report about the VM's job (started, runner exited,
// agent failed) and returns the runner's exit code so far (-1: running).
func (v *vm) jobReport(r agentproto.Report, exitCode int) int {
	switch r.Event {
	case agentproto.EventJobStarted:
		// One save (write 4) for the job's id and the busy phase; a
		// second only when the reconcile loop had turned the VM busy
		// already, from its forge's busy flag. What the forge's driver
		// learns of the job (learnJob) is asked after it, so that the
		// busy record is on disk meanwhile, and saved by one more write.
		job := r.Job != "" && jobIDPattern.MatchString(r.Job)
		v.mu.Lock()
		changed := false
		if job && v.rec.Job == "" {
			v.rec.Job, changed = r.Job, true
		}
		turned := v.rec.Phase == vmstate.Idle
		if turned {
			v.turnBusy(&v.rec)
			changed = true
		}
		if changed {
			v.rec.Seq++
		}
		v.mu.Unlock()
		if turned {
			v.phaseMoved(vmstate.Idle, vmstate.Busy)
		}
		v.persist(v.m.d.Store)
		v.learnJob()
		v.persist(v.m.d.Store)
	case agentproto.EventRunnerExited:
		exitCode = r.ExitCode
		if busy := v.busySince(); !busy.IsZero() {
			v.m.obs.JobDone(v.pool.cfg.Name, time.Since(busy))
		}
		code := r.ExitCode
		v.remember(func(rec *vmstate.Record) { rec.ExitCode = &code }) // not saved: see vm
		if code != 0 {
			// The runner died before its job ended: fail the job now, not
			// once the guest has powered off (its leftovers may slow that).
			ctx, cancel := context.WithTimeout(context.Background(), failJobTimeout)
			v.failJob(ctx, v.snapshot(), fmt.Sprintf("runner exit code %d", code))
			cancel()
		}
	case agentproto.EventFailed:
		v.remember(func(rec *vmstate.Record) { rec.Reason = clipGuest(r.Message, maxReasonBytes) }) // not saved: see vm
	}
	return exitCode
}

// teardown removes everything the VM had. It runs with its own deadline so
// a drain's cancelled context never leaves a runner behind.
func (v *vm) teardown(machine vmm.Machine, ok bool, cause error) {
	m := v.m
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// The address (the slot: vmm.Spec.Slot) goes back once the monitor
	// is known gone: one whose Kill failed may still run as the slot's
	// user, and a leaked slot is better than two VMs with one uid.
	keepSlot := false
	if machine != nil {
		if err := machine.Kill(ctx); err != nil {
			v.log.Error("kill vm", "err", err)
			keepSlot = true
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
	// Not saved: the directory goes below, or deregisterLater saves the
	// record as Deregistering. A crash meanwhile leaves the record as the
	// VM last saved it, whose monitor recovery finds gone (or kills) and
	// whose TAP, address and runner it removes, as it would a Done one.
	v.remember(func(r *vmstate.Record) {
		r.Phase = final
		if cause != nil && r.Reason == "" {
			r.Reason = cause.Error()
		}
	})
	// The network goes first: the forge calls below are the host's, not
	// the guest's, and a hanging forge must not hold the VM's TAP,
	// address and rules.
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
		if keepSlot {
			v.log.Error("vm not known gone: its slot and record kept for the next start", "address", rec.Address)
		} else {
			m.d.Alloc.Release(parseAddr(rec.Address), rec.ID)
		}
	}
	if !ok {
		fctx, fcancel := context.WithTimeout(ctx, failJobTimeout)
		v.failJob(fctx, rec, forgeReason(cause, rec, v.pool.cfg.Timeouts.Job))
		fcancel()
	}
	var removeErr error
	if rec.RunnerID != "" {
		removeErr = removeRunner(ctx, v.pool.forge, runnerRef(rec))
	}
	if !ok {
		v.keepConsole()
	}
	if keepSlot {
		// Its record stays, Failed with its monitor's PID (and its runner
		// if the forge did not take it back), its TAP gone: the next
		// start's Recover kills that monitor, or holds the address again
		// when it cannot (holdAddress), and removes the runner.
		kept := v.snapshot()
		kept.Phase, kept.PID, kept.TAP = vmstate.Failed, machine.PID(), ""
		// Numbered by the store after whatever the VM saved last (the
		// record in memory may carry the number already saved, when the
		// VM failed before any change: Save would skip it as not newer).
		kept.Seq = 0
		if removeErr == nil {
			kept.RunnerID = ""
		}
		if err := m.d.Store.Save(&kept); err != nil {
			v.log.Error("save the record of a vm not known gone", "err", err)
		}
		if removeErr != nil {
			// Its monitor may still run, its runner take jobs: retried
			// in this run too, not only at the next start.
			m.removeLaterKeepingRecord(v.pool.forge, kept)
			v.log.Warn("runner removal of a vm not known gone failed; retrying until the forge confirms", "runner", rec.RunnerName, "err", removeErr, "retry_in", removalFirstRetry)
		}
		return
	}
	if removeErr != nil {
		// Not dropped: its record stays until the forge confirms.
		m.deregisterLater(v.pool.forge, v.snapshot(), removeErr)
		return
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

// retireRunner, for forges whose runner credential a job could read and
// use (forge.Retirer), makes that credential useless at the forge now
// that the VM's one job has started. It runs on its own goroutine: the
// job goes on meanwhile, and teardown removes the runner in any case.
func (v *vm) retireRunner() {
	ret, ok := v.pool.forge.(forge.Retirer)
	if !ok {
		return
	}
	rec := v.snapshot()
	if rec.RunnerID == "" {
		return
	}
	ref := runnerRef(rec)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		start := time.Now()
		var err error
	retry:
		for i := 1; ; i++ {
			if err = ret.Retire(ctx, ref); err == nil {
				v.log.Info("runner retired at the forge: its credential takes no more jobs", "runner", ref.Name, "took", time.Since(start).Round(time.Millisecond))
				return
			}
			if i == 5 {
				break
			}
			select {
			case <-ctx.Done():
				break retry
			case <-time.After(time.Duration(i) * 500 * time.Millisecond):
			}
		}
		v.log.Error("retire runner: its credential may take more jobs until the VM ends", "runner", ref.Name, "err", err)
	}()
}

// removeRunner retries removal a few times: a runner left at the forge is
// a leak the user sees. When it still fails, the caller keeps the removal
// for later (Manager.deregisterLater).
func removeRunner(ctx context.Context, f forge.Forge, ref forge.RunnerRef) error {
	var err error
	for i := 0; i < 5; i++ {
		if err = f.Remove(ctx, ref); err == nil || i == 4 {
			return err
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
