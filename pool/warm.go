package pool

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
	"github.com/nixos-fireactions/nixos-fireactions/vmm"
	"github.com/nixos-fireactions/nixos-fireactions/warmstart"
	"golang.org/x/sys/unix"
)

// restoreTimeout bounds each part of a restore's handover: loading the
// template's state and resuming (resumeAhead, from the monitor's start),
// then handing the guest its identity (finishRestore). Past it the VM
// boots cold.
const restoreTimeout = 30 * time.Second

// restoring is a restore whose monitor has started: its state loads and
// its guest runs (resumeAhead) while the forge registers the runner, and
// the guest then waits for its identity, which needs that runner.
type restoring struct {
	machine vmm.Machine
	t       *warmstart.Template
	chooser *warmstart.Chooser // its pool's, which counts a fallback
	started time.Time
	release func() // ends the restore's use of its template build
	// failed: the monitor failed to start and the driver could not kill
	// it (Start returned it with its error); the VM fails, handOff's
	// machine to its teardown.
	failed error
	// resumed reports the Resume started ahead of the registration
	// (resumeAhead): the state loaded and the guest running, waiting for
	// its identity.
	resumed <-chan error
}

// resumeAhead loads the restore's state and runs its guest while the
// forge registers the runner: under emulation a restored guest spends
// its first ~130 ms translating what it runs on waking (its kernel, the
// agent's runtime), whatever the host sends it (vmm/qemu's benchmark), so
// that time goes beside the registration too, not after it. The guest
// only waits for its identity meanwhile: its network is down, it holds
// no credential, and nothing in it draws random bytes before the
// identity's reseed. finishRestore takes the result.
func (r *restoring) resumeAhead(ctx context.Context) {
	w, ok := r.machine.(vmm.Warm)
	if !ok {
		return
	}
	done := make(chan error, 1)
	r.resumed = done
	go func() {
		rctx, cancel := context.WithTimeout(ctx, restoreTimeout)
		defer cancel()
		done <- w.Resume(rctx)
	}()
}

// handOff is the restore's monitor for the VM's teardown when the VM
// goes no further than a started restore: the build stays held until a
// Kill of the monitor succeeds (heldBuild).
func (r *restoring) handOff() vmm.Machine {
	return &heldBuild{Machine: r.machine, release: r.release}
}

// startRestore starts the monitor of spec's VM from its pool's template,
// or returns nil: the pool is not a warm-start one, its template does not
// fit (warmstart.Chooser logs and counts why), or the monitor did not
// start (logged and counted). Nil means the caller boots the VM cold.
// It comes before the runner's registration: QEMU's own start (its
// libraries and machine, ~100 ms under TCG here), the state's load and
// the guest's first run run while the forge answers. (Firecracker's
// Start loads the snapshot before it returns: that part runs before the
// registration, its resume beside it.) The caller ends a
// non-nil restoring with finishRestore, or, when the VM goes no further
// (its runner not registered, or the restore failed with a monitor the
// driver could not kill), hands it to the VM's teardown (handOff).
func (v *vm) startRestore(ctx context.Context, spec vmm.Spec) *restoring {
	m := v.m
	w := m.warmPoolOf(v.pool)
	if w == nil {
		return nil
	}
	key, root, build, ok := w.acquire()
	if !ok {
		w.chooser.ColdBoot(ctx, spec.ID, &warmstart.Fallback{Reason: warmstart.ReasonNoTemplate, Detail: "no template built from the pool's current files yet"})
		return nil
	}
	// Every file of the restore is build's: a rebuild meanwhile
	// publishes another directory and leaves this one until released;
	// its removal then runs in the background, not in this start.
	release := func() { m.releaseBuild(w, build) }
	if own := rootOf(v.root); own != root {
		// The template's kernel probed another image's drive: this VM
		// boots cold, and the next full pass builds from its image.
		release()
		w.rebuild(build, m.log)
		w.chooser.ColdBoot(ctx, spec.ID, &warmstart.Fallback{Reason: warmstart.ReasonImageMismatch,
			Detail: fmt.Sprintf("template booted image %q, this VM boots %q", root, own)})
		return nil
	}
	t := w.chooser.Template(ctx, spec.ID, build, key)
	if t == nil {
		release()
		return nil
	}
	spec.Restore, spec.MemoryFile = t.State, t.Memory
	spec.Initramfs = filepath.Join(t.Dir, templateInitramfs)
	spec.Identity = filepath.Join(spec.Dir, "identity.sock")
	t0 := time.Now()
	machine, err := m.d.Hypervisor.Start(ctx, spec)
	if err != nil && machine != nil {
		// The driver could not kill its failed start's monitor (see
		// vmm.Hypervisor): it may still run as the slot's user and map
		// the build's files. No VM boots in that slot; the VM fails and
		// its teardown kills the monitor again, as in finishRestore.
		w.chooser.RestoreNotEnded(ctx, spec.ID, fmt.Errorf("start: %w", err))
		return &restoring{machine: machine, t: t, chooser: w.chooser, started: t0, release: release,
			failed: fmt.Errorf("restore failed to start (%w) and its monitor is not known gone", err)}
	}
	if err != nil {
		release()
		w.chooser.ColdBoot(ctx, spec.ID, fmt.Errorf("start: %w", err))
		return nil
	}
	r := &restoring{machine: machine, t: t, chooser: w.chooser, started: t0, release: release}
	r.resumeAhead(ctx)
	return r
}

// finishRestore waits for the restore's resume and hands its guest its
// identity (cfg with the registered runner), or returns a nil machine: the restore
// failed (the monitor is killed, the failure logged and counted) and the
// caller boots the VM cold. A restored VM is never half set up. When the
// failed restore's monitor is not known gone (its Kill failed) it may
// still run as the slot's user: no VM may boot in that slot, so the
// error returned with its machine fails the VM, whose teardown kills it
// again and keeps the slot if that fails too. That monitor may still map
// the template build's files too: the machine returned holds the build
// until a Kill of it succeeds (heldBuild).
func (v *vm) finishRestore(ctx context.Context, r *restoring, mac string, cfg agentproto.Config) (vmm.Machine, error) {
	hctx, cancel := context.WithTimeout(ctx, restoreTimeout)
	defer cancel()
	if err := r.handOver(hctx, mac, cfg); err != nil {
		if kerr := r.kill(ctx); kerr != nil {
			r.chooser.RestoreNotEnded(ctx, cfg.VMID, fmt.Errorf("%w; kill: %w", err, kerr))
			return r.handOff(),
				fmt.Errorf("restore failed (%w) and its monitor is not known gone: %w", err, kerr)
		}
		r.release()
		r.chooser.ColdBoot(ctx, cfg.VMID, err)
		return nil, nil
	}
	r.release()
	v.log.Info("vm restored from its pool's template", "template", r.t.Dir, "took", time.Since(r.started).Round(time.Millisecond))
	v.restored = true
	return r.machine, nil
}

// heldBuild is the machine of a failed restore whose monitor is not
// known gone: the template build it was restored from (whose state and
// memory files that monitor may map) stays held from the pool's prunes
// until a Kill of it succeeds, the VM's teardown's, which runs in the
// VM's goroutine (see releaseBuild). If that Kill fails too, the build
// is kept for the rest of this run, as the slot is.
type heldBuild struct {
	vmm.Machine
	once    sync.Once
	release func()
}

// Kill kills the monitor and, once it is gone, releases the build.
func (h *heldBuild) Kill(ctx context.Context) error {
	err := h.Machine.Kill(ctx)
	if err == nil {
		h.once.Do(h.release)
	}
	return err
}

// kill kills the restore's monitor, with its own deadline.
func (r *restoring) kill(ctx context.Context) error {
	kctx, kcancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer kcancel()
	return r.machine.Kill(kctx)
}

// rootOf is what a template shares with its restores of an image root:
// the image's digest and its read-only drives' files by identity (device,
// inode, size, time): the template's kernel read their first blocks as it
// probed them, so an image flattened again (the same digest pulled after
// an eviction, another file system type) is another template's. "" for
// an initramfs root.
func rootOf(r VMRoot) string {
	if r == nil {
		return ""
	}
	var spec vmm.Spec
	r.Apply(&spec, &agentproto.Config{})
	var b strings.Builder
	b.WriteString(r.Digest())
	for _, d := range spec.Drives {
		if !d.ReadOnly {
			continue
		}
		var st unix.Stat_t
		if err := unix.Stat(d.Path, &st); err != nil {
			fmt.Fprintf(&b, " %s:-", d.ID)
			continue
		}
		fmt.Fprintf(&b, " %s:%d:%d:%d:%d", d.ID, st.Dev, st.Ino, st.Size, st.Mtim.Nano())
	}
	return b.String()
}

// handOver hands the restore's guest its identity once the Resume
// started ahead has ended (resumeAhead), or resumes it first.
func (r *restoring) handOver(ctx context.Context, mac string, cfg agentproto.Config) error {
	if r.resumed == nil {
		return SendIdentity(ctx, r.machine, mac, cfg)
	}
	select {
	case err := <-r.resumed:
		if err != nil {
			return fmt.Errorf("resume: %w", err)
		}
	case <-ctx.Done():
		return fmt.Errorf("resume: %w", ctx.Err())
	}
	return sendIdentityOnly(ctx, r.machine.(vmm.Warm), mac, cfg)
}

// SendIdentity resumes a restored machine and hands its agent its
// identity: its config (address, hostname, agent token, runner
// credential, registry settings), MAC, fresh random seed and the clock.
// It is the one handover of a restore, the pool's and the isolation
// test's (e2e) alike.
func SendIdentity(ctx context.Context, machine vmm.Machine, mac string, cfg agentproto.Config) error {
	w, ok := machine.(vmm.Warm)
	if !ok {
		return errors.New("the VMM's machine cannot be restored")
	}
	if err := w.Resume(ctx); err != nil {
		return fmt.Errorf("resume: %w", err)
	}
	return sendIdentityOnly(ctx, w, mac, cfg)
}

// sendIdentityOnly is SendIdentity to a machine resumed already.
func sendIdentityOnly(ctx context.Context, w vmm.Warm, mac string, cfg agentproto.Config) error {
	seed := make([]byte, 64)
	if _, err := rand.Read(seed); err != nil {
		return fmt.Errorf("seed: %w", err)
	}
	b, err := json.Marshal(agentproto.Identity{Config: cfg, MAC: mac, Seed: seed, Now: time.Now()})
	clear(seed)
	if err != nil {
		return fmt.Errorf("identity: %w", err)
	}
	defer clear(b) // one copy of the runner's credential fewer (the encoder's and the driver's may remain until collected)
	if err := w.SendIdentity(ctx, b); err != nil {
		return fmt.Errorf("send identity: %w", err)
	}
	return nil
}
