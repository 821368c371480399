package pool

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/forge"
	"github.com/nixos-fireactions/nixos-fireactions/vmm"
	"github.com/nixos-fireactions/nixos-fireactions/vmstate"
)

// Leftovers is what start-up cleanup needs from the host beyond Deps.
type Leftovers struct {
	// KillVM ends a monitor process a previous run left, if pid is still
	// that VM's monitor.
	KillVM func(ctx context.Context, id string, pid int) error
	// TAPs lists the TAP devices the orchestrator owns on this host.
	TAPs func() ([]string, error)
	// Adopt re-attaches to a VM's running monitor; nil: never adopt.
	Adopt func(id string, pid int) (vmm.Machine, error)
}

// Recover deals with everything a previous run left behind. A VM whose
// monitor still runs is adopted, whatever its record says (idle, busy,
// or still booting: its runner may have taken a job while no one
// watched): it goes on as if nothing happened, a booting one with its
// boot timeout running from its record's time and its readiness learnt
// from its agent or its forge (see reconcilePool). Everything else is
// removed: VM processes, TAPs, directories, addresses and the forge
// runners of this host. A runner whose removal fails stays recorded and
// is retried until its forge confirms (see deregisterLater); so is one a
// previous run left pending, once Run starts. Each forge call is bounded
// (removalCallTimeout), and a forge that let one time out is not called
// again here: an unanswering forge delays start-up (and systemd's READY) by one
// call timeout at most. A record
// without a PID (a crash after the monitor started, before the record
// said so) has its monitor found by the VM's identity, when the
// hypervisor can (vmm.Finder). Only the directories the store made are
// removed (see vmstate.Store.List). It runs before the first reconcile.
func (m *Manager) Recover(ctx context.Context, l Leftovers) error {
	defer func() {
		m.mu.Lock()
		m.recovered = true
		m.mu.Unlock()
	}()
	var errs []error
	// A forge that let a call time out during recovery is not called
	// again before Run: what it still owes is left for the removal
	// retries, so that an unanswering forge costs start-up one call
	// timeout at most.
	down := map[string]error{}
	// The VMs adopted below wait for the first pass after this recovery
	// to read their pool's runners (see vm.serve).
	for _, p := range m.poolList() {
		p.listed = make(chan struct{})
	}
	if err := m.d.Store.RemoveUnfinished(); err != nil {
		errs = append(errs, err)
	}
	recs, err := m.d.Store.List()
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	keepTAP, keepRunner := map[string]bool{}, map[string]bool{}
	finder, _ := m.d.Hypervisor.(vmm.Finder)
	errs = append(errs, m.reapTemplates(ctx, finder, l.KillVM)...)
	for _, r := range recs {
		log := m.log.With("vm", r.ID, "pool", r.Pool)
		if r.Phase == vmstate.Deregistering {
			m.recoverRemoval(r)
			keepRunner[r.RunnerName] = true
			continue
		}
		if r.PID <= 0 && finder != nil {
			pid, err := finder.FindMonitor(r.ID)
			if err != nil {
				// Its monitor may run: keep its record, TAP and
				// address for the next start, but not its runner.
				errs = append(errs, fmt.Errorf("vm %s: %w", r.ID, err))
				keepTAP[r.TAP], keepRunner[r.RunnerName] = true, true
				m.holdAddress(r, log)
				m.removeUnsupervisedRunner(ctx, r, down, log)
				continue
			}
			if pid > 0 {
				log.Info("found the monitor of a vm recorded without one", "phase", r.Phase, "pid", pid)
				r.PID = pid
			}
		}
		if m.adopt(ctx, l, r) {
			keepTAP[r.TAP], keepRunner[r.RunnerName] = true, true
			continue
		}
		log.Info("removing vm left by a previous run", "phase", r.Phase, "pid", r.PID)
		if r.PID > 0 && l.KillVM != nil {
			if err := l.KillVM(ctx, r.ID, r.PID); err != nil {
				// Keep its record, TAP and address: the next start
				// tries again. Its runner goes now.
				errs = append(errs, fmt.Errorf("vm %s: %w", r.ID, err))
				keepTAP[r.TAP], keepRunner[r.RunnerName] = true, true
				m.holdAddress(r, log)
				m.removeUnsupervisedRunner(ctx, r, down, log)
				continue
			}
		}
		if r.TAP != "" {
			if err := m.d.Network.DeleteTAP(r.TAP); err != nil {
				errs = append(errs, err)
			}
		}
		if p := m.poolNamed(r.Pool); p != nil && r.RunnerID != "" {
			// Its job first, while the runner (and the credential the
			// driver may fail it with) still exists.
			m.failRecordedJob(ctx, p, r, down, "the VM ended while no orchestrator ran", log)
			if err := m.recoverCall(ctx, p, down, func(ctx context.Context) error {
				return p.forge.Remove(ctx, runnerRef(*r))
			}); err != nil {
				m.deregisterLater(p.forge, *r, err)
				keepRunner[r.RunnerName] = true
				continue
			}
		} else if r.RunnerID != "" {
			log.Warn("runner of a pool no longer configured left at its forge; remove it there",
				"runner", r.RunnerName, "runner_id", r.RunnerID)
		}
		if err := m.d.Store.Remove(r.ID); err != nil {
			errs = append(errs, err)
		}
	}
	if l.TAPs != nil {
		taps, err := l.TAPs()
		if err != nil {
			errs = append(errs, err)
		}
		for _, t := range taps {
			if keepTAP[t] {
				continue
			}
			m.log.Info("removing tap left by a previous run", "tap", t)
			if err := m.d.Network.DeleteTAP(t); err != nil {
				errs = append(errs, err)
			}
		}
	}
	// Runners of this host that no VM holds: a crash between registering
	// and recording, or a record lost with its disk.
	seen := map[string]bool{}
	for _, p := range m.poolList() {
		if seen[p.key] {
			continue
		}
		seen[p.key] = true
		var rs []forge.RunnerState
		err := m.recoverCall(ctx, p, down, func(ctx context.Context) error {
			var err error
			rs, err = p.forge.Runners(ctx, m.owner)
			return err
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("forge %q: list runners: %w", p.cfg.Forge, err))
			m.sweepOwed[p.key] = true
			continue
		}
		for _, r := range rs {
			if keepRunner[r.Name] {
				continue
			}
			m.log.Info("removing runner left by a previous run", "forge", p.cfg.Forge, "runner", r.Name)
			if err := m.recoverCall(ctx, p, down, func(ctx context.Context) error {
				return p.forge.Remove(ctx, r.RunnerRef)
			}); err != nil {
				m.deregisterUnrecorded(p, r.RunnerRef, err)
			}
		}
	}
	return errors.Join(errs...)
}

// adopt takes over a VM a previous run left, when its monitor still runs.
// A VM recorded creating whose monitor was found by its identity had
// started booting: it is adopted as booting.
func (m *Manager) adopt(ctx context.Context, l Leftovers, r *vmstate.Record) bool {
	p := m.poolNamed(r.Pool)
	if l.Adopt == nil || p == nil || r.PID <= 0 || r.AgentToken == "" || r.RunnerID == "" || r.TAP == "" ||
		(r.Phase != vmstate.Idle && r.Phase != vmstate.Busy && r.Phase != vmstate.Booting && r.Phase != vmstate.Creating) {
		return false
	}
	var bootFrom time.Time
	if r.Phase == vmstate.Creating || r.Phase == vmstate.Booting {
		bootFrom = r.Updated // the monitor started before this record was saved
		r.Phase = vmstate.Booting
	}
	machine, err := l.Adopt(r.ID, r.PID)
	if err != nil {
		m.log.Info("not adopting vm", "vm", r.ID, "err", err)
		return false
	}
	if err := m.d.Alloc.Reserve(parseAddr(r.Address), r.ID); err != nil {
		m.log.Warn("not adopting vm", "vm", r.ID, "err", err)
		_ = machine.Kill(ctx)
		return false
	}
	// The rules were replaced at start: admit the VM again.
	if err := m.d.Network.Admit(r.TAP, r.MAC, parseAddr(r.Address)); err != nil {
		m.log.Warn("not adopting vm", "vm", r.ID, "err", err)
		m.d.Alloc.Release(parseAddr(r.Address), r.ID)
		_ = machine.Kill(ctx)
		return false
	}
	// The PID may have been found by identity: record it. A failed save
	// leaves the old record, whose monitor the next start finds by
	// identity again: the error is logged, the VM adopted all the same and
	// its record saved again by the reconcile loop.
	r.Seq++
	saveErr := m.d.Store.Save(r)
	if saveErr != nil {
		m.log.Error("adopting vm whose record cannot be saved", "vm", r.ID, "err", saveErr)
	}
	v := adoptedVM(m, p, *r, m.adoptRoot(ctx, r), bootFrom)
	if saveErr != nil {
		v.unsaved, v.savedSeq = true, 0
		m.obs.RecordUnsaved(p.cfg.Name)
	}
	m.mu.Lock()
	m.vms[r.ID] = v
	m.wg.Add(1)
	m.mu.Unlock()
	p.moved("", v.phase())
	v.log.Info("adopted vm left running by a previous run", "phase", r.Phase, "pid", r.PID)
	go m.runVM(context.WithoutCancel(ctx), v, machine)
	return true
}

// recoverCall makes one call to p's forge for Recover, bounded by
// removalCallTimeout, unless that forge already let one time out (down,
// by forge name): then it fails at once with that failure.
func (m *Manager) recoverCall(ctx context.Context, p *pool, down map[string]error, call func(context.Context) error) error {
	if err := down[p.cfg.Forge]; err != nil {
		return fmt.Errorf("not tried: forge %q did not answer earlier during recovery: %w", p.cfg.Forge, err)
	}
	cctx, cancel := context.WithTimeout(ctx, removalCallTimeout)
	defer cancel()
	err := call(cctx)
	if err != nil && (errors.Is(err, context.DeadlineExceeded) || cctx.Err() != nil) && ctx.Err() == nil {
		// Timed out: the forge does not answer. (A forge that answers
		// an error, such as a runner it will not remove, is asked again.)
		down[p.cfg.Forge] = err
	}
	return err
}

// removeUnsupervisedRunner removes the runner of a VM whose monitor may
// still run but is not supervised by this run (it could not be looked
// for, or survived the kill): its record, TAP and address are kept for
// the next start, but a runner left registered would take jobs with no
// timeout. Its job is failed first when the record says it took one.
// Removal is idempotent (forge.Forge.Remove), so the next start asking
// again is harmless; a removal that fails is queued like a deregistering
// VM's, retried until the forge confirms, and leaves the record as it is.
func (m *Manager) removeUnsupervisedRunner(ctx context.Context, r *vmstate.Record, down map[string]error, log *slog.Logger) {
	p := m.poolNamed(r.Pool)
	if p == nil || r.RunnerID == "" {
		return
	}
	log = log.With("runner", r.RunnerName, "runner_id", r.RunnerID)
	m.failRecordedJob(ctx, p, r, down, "the VM could not be supervised after a restart", log)
	err := m.recoverCall(ctx, p, down, func(ctx context.Context) error {
		return p.forge.Remove(ctx, runnerRef(*r))
	})
	if err == nil {
		log.Warn("runner of a vm whose monitor may still run removed at its forge: it takes no more jobs; its record stays for the next start")
		return
	}
	m.removeLaterKeepingRecord(p.forge, *r)
	log.Warn("runner removal of a vm whose monitor may still run failed; retrying until the forge confirms", "err", err, "retry_in", removalFirstRetry)
}

// errLeftUnlisted is why a runner a previous run left is removed by a
// pass and not by Recover.
var errLeftUnlisted = errors.New("left by a previous run; its forge could not list its runners at start")

// sweepLeftovers queues the removal of the runners of p's forge, listed
// in rs by the first pass since a Recover that could not list them, that
// no VM of this run holds (nor a pending removal): what a crash left
// between a registration and its record. A VM is known by its runner's
// name before it registers, so no runner being registered now is taken.
// The removals go through the retries (deregisterUnrecorded): no forge
// call on the Run goroutine.
func (m *Manager) sweepLeftovers(p *pool, rs []forge.RunnerState) {
	held := map[string]bool{}
	var vms []*vm
	m.mu.Lock()
	for _, v := range m.vms {
		vms = append(vms, v)
	}
	for _, r := range m.removals {
		held[r.rec.RunnerName] = true
	}
	m.mu.Unlock()
	for _, v := range vms {
		held[v.runnerName()] = true
	}
	for _, r := range rs {
		if held[r.Name] {
			continue
		}
		m.log.Info("removing runner left by a previous run", "forge", p.cfg.Forge, "runner", r.Name)
		m.deregisterUnrecorded(p, r.RunnerRef, errLeftUnlisted)
	}
}

// failRecordedJob fails at the forge the job r's record says its runner
// took, before Recover removes that runner: the driver may need the
// runner, or its credential, to do it (forge.JobFailer).
func (m *Manager) failRecordedJob(ctx context.Context, p *pool, r *vmstate.Record, down map[string]error, reason string, log *slog.Logger) {
	f, ok := p.forge.(forge.JobFailer)
	if !ok || (r.Job == "" && r.Busy.IsZero() && r.Phase != vmstate.Busy) {
		return
	}
	err := m.recoverCall(ctx, p, down, func(ctx context.Context) error {
		return f.FailJob(ctx, runnerRef(*r), r.Job, reason)
	})
	switch {
	case err == nil:
		log.Warn("job failed at the forge", "runner", r.RunnerName, "job", r.Job, "reason", reason)
	case errors.Is(err, forge.ErrJobEnded), errors.Is(err, errors.ErrUnsupported):
	default:
		log.Warn("fail the job of a vm left by a previous run at the forge", "runner", r.RunnerName, "job", r.Job, "err", err)
	}
}

// recoverRemoval goes on with the removal of a runner a previous run could
// not remove: queued, due at once, for the removal retries once Run
// starts (see retryRemovals), and again until its forge confirms. No
// forge call here: start-up must not wait for an unanswering forge.
func (m *Manager) recoverRemoval(r *vmstate.Record) {
	f, err := m.removalForge(r.Pool)
	if err != nil {
		m.log.Warn("runner of a pool no longer configured left at its forge; remove it there",
			"vm", r.ID, "runner", r.RunnerName, "runner_id", r.RunnerID, "err", err)
		if err := m.d.Store.Remove(r.ID); err != nil {
			m.log.Error("remove vm directory", "vm", r.ID, "err", err)
		}
		return
	}
	m.mu.Lock()
	m.removals[r.ID] = &removal{rec: *r, forge: f} // next zero: due at once
	m.mu.Unlock()
	m.log.Warn("runner removal left by a previous run still pending; retrying once running", "vm", r.ID, "pool", r.Pool,
		"runner", r.RunnerName, "runner_id", r.RunnerID)
}

// deregisterUnrecorded keeps the removal of a runner of this host no
// record holds (found at the forge on start-up) for later, under a record
// of its own, when the runner is named after a VM id.
func (m *Manager) deregisterUnrecorded(p *pool, ref forge.RunnerRef, cause error) {
	id := strings.TrimPrefix(ref.Name, m.owner.RunnerName(""))
	rec := &vmstate.Record{ID: id, Pool: p.cfg.Name, Phase: vmstate.Deregistering,
		RunnerID: ref.ID, RunnerName: ref.Name, Created: time.Now().UTC()}
	if ref.ID == "" || !vmstate.ValidID(id) {
		m.log.Warn("runner left by a previous run could not be removed; the next start tries again",
			"pool", p.cfg.Name, "runner", ref.Name, "err", cause)
		return
	}
	if err := m.d.Store.Create(rec); err != nil {
		m.log.Warn("runner left by a previous run could not be removed, nor its removal recorded; the next start tries again",
			"vm", id, "pool", p.cfg.Name, "runner", ref.Name, "err", cause,
			"record_err", fmt.Errorf("record runner removal of vm %s: %w", id, err))
		return
	}
	m.deregisterLater(p.forge, *rec, cause)
}

// adoptRoot leases the image an adopted VM boots again, before the VM
// counts as adopted, so that a pull evicting images past the store's cap
// or a prune never removes it while the VM runs. nil: the VM boots its
// initramfs, its record predates image digests in records, or the lease
// failed. A VM whose image is gone from the store is adopted all the
// same: its running monitor keeps the image file open, so the guest goes
// on undisturbed; it just holds no lease.
func (m *Manager) adoptRoot(ctx context.Context, r *vmstate.Record) VMRoot {
	if m.d.Roots == nil || r.Image == "" {
		return nil
	}
	root, err := m.d.Roots.AdoptVM(ctx, r.Pool, m.d.Store.Dir(r.ID), r.Image)
	if err != nil {
		m.log.Warn("adopting vm without a lease on its image",
			"vm", r.ID, "pool", r.Pool, "digest", r.Image,
			"err", fmt.Errorf("pool %q: adopt vm %s: %w", r.Pool, r.ID, err))
		return nil
	}
	return root
}

func (m *Manager) poolNamed(name string) *pool {
	for _, p := range m.poolList() {
		if p.cfg.Name == name {
			return p
		}
	}
	return nil
}

// Phases counts VMs by phase, for logs and tests.
func (m *Manager) Phases() map[vmstate.Phase]int {
	out := map[vmstate.Phase]int{}
	for _, r := range m.VMs() {
		out[r.Phase]++
	}
	return out
}

// holdAddress keeps the address of a VM whose monitor may still run (it
// could not be looked for, or outlived its kill) from every new VM: the
// guest may still use it.
func (m *Manager) holdAddress(r *vmstate.Record, log *slog.Logger) {
	if r.Address == "" {
		return
	}
	if err := m.d.Alloc.Reserve(parseAddr(r.Address), r.ID); err != nil {
		log.Error("hold the address of a vm whose monitor may still run", "address", r.Address, "err", err)
	}
}

// reapTemplates ends the template VMs a previous run left running. A
// template build is not recorded: its monitor, left by a crash, runs as
// its slot's user (the Firecracker jailer's uid) while the allocator
// holds no address for it, so it must be gone before any VM is given a
// slot. The templates looked for are the configured pools' and those of
// every pool with a directory in TemplateDir (one removed or turned cold
// while the daemon was down), including those New removed before this
// ran (removedTemplates). A monitor that could not be ended is an
// error, and the slot its build recorded (templateSlotFile) is held from
// every VM; the record of one known gone is removed.
//
// Without a finder (a driver that cannot look a monitor up: QEMU and
// Firecracker both can) nothing proves a template's monitor gone, so
// its recorded slots are held and their records kept, start after start,
// with their builds, until a driver with a finder, or an operator,
// removes them: a leaked slot is better than two VMs with one uid.
// Without a kill, a monitor found cannot be ended: held the same way.
func (m *Manager) reapTemplates(ctx context.Context, finder vmm.Finder, kill func(context.Context, string, int) error) []error {
	names := map[string]bool{}
	m.mu.Lock() // a reload writes p.cfg under it
	for _, p := range m.pools {
		names[p.cfg.Name] = true
	}
	m.mu.Unlock()
	for _, name := range m.removedTemplates {
		names[name] = true
	}
	if m.d.TemplateDir != "" {
		entries, _ := os.ReadDir(m.d.TemplateDir) // none yet
		for _, e := range entries {
			if e.IsDir() {
				names[e.Name()] = true
			}
		}
	}
	var errs []error
	for name := range names {
		id := m.templateID(name)
		if finder == nil {
			errs = append(errs, m.holdTemplateSlots(name, id)...)
			continue
		}
		pid, err := finder.FindMonitor(id)
		if err != nil {
			errs = append(errs, fmt.Errorf("template vm %s of pool %s: %w", id, name, err))
			errs = append(errs, m.holdTemplateSlots(name, id)...)
			continue
		}
		if pid > 0 && kill == nil {
			errs = append(errs, fmt.Errorf("template vm %s of pool %s: its monitor (pid %d) runs and the VMM cannot end it", id, name, pid))
			errs = append(errs, m.holdTemplateSlots(name, id)...)
			continue
		}
		if pid > 0 {
			m.log.Warn("warm start: ending a template VM a previous run left", "pool", name, "vm", id, "pid", pid)
			if err := kill(ctx, id, pid); err != nil {
				errs = append(errs, fmt.Errorf("template vm %s of pool %s: %w", id, name, err))
				errs = append(errs, m.holdTemplateSlots(name, id)...)
				continue
			}
		}
		m.dropTemplateSlots(name)
	}
	return errs
}
