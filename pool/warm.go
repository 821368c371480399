package pool

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
	"github.com/nixos-fireactions/nixos-fireactions/vmm"
	"github.com/nixos-fireactions/nixos-fireactions/warmstart"
	"golang.org/x/sys/unix"
)

// restoreTimeout bounds a restore: loading the template's state, resuming
// and handing the guest its identity. Past it the VM boots cold.
const restoreTimeout = 30 * time.Second

// warmStart restores the VM of spec and cfg from its pool's template and
// hands it its identity, or returns nil: the pool is not a warm-start
// one, its template does not fit (warmstart.Chooser logs and counts why),
// or the restore failed (the VM is killed, logged and counted). Nil means
// the caller boots the VM cold; a restored VM is never half set up.
func (v *vm) warmStart(ctx context.Context, spec vmm.Spec, cfg agentproto.Config) vmm.Machine {
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
	defer m.releaseBuild(w, build)
	if own := rootOf(v.root); own != root {
		// The template's kernel probed another image's drive: this VM
		// boots cold, and the next full pass builds from its image.
		w.rebuild()
		w.chooser.ColdBoot(ctx, spec.ID, &warmstart.Fallback{Reason: warmstart.ReasonImageMismatch,
			Detail: fmt.Sprintf("template booted image %q, this VM boots %q", root, own)})
		return nil
	}
	t := w.chooser.Template(ctx, spec.ID, build, key)
	if t == nil {
		return nil
	}
	machine, err := v.restore(ctx, spec, cfg, t)
	if err != nil {
		w.chooser.ColdBoot(ctx, spec.ID, err)
		return nil
	}
	v.restored = true
	return machine
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

// restore starts spec from template t with its own TAP, MAC, directory
// and identity channel, resumes it and sends it its identity; any failure
// kills the monitor.
func (v *vm) restore(ctx context.Context, spec vmm.Spec, cfg agentproto.Config, t *warmstart.Template) (vmm.Machine, error) {
	ctx, cancel := context.WithTimeout(ctx, restoreTimeout)
	defer cancel()
	spec.Restore, spec.MemoryFile = t.State, t.Memory
	spec.Initramfs = filepath.Join(t.Dir, templateInitramfs)
	spec.Identity = filepath.Join(spec.Dir, "identity.sock")
	t0 := time.Now()
	machine, err := v.m.d.Hypervisor.Start(ctx, spec)
	if err != nil {
		return nil, fmt.Errorf("start: %w", err)
	}
	err = SendIdentity(ctx, machine, spec.MAC, cfg)
	if err != nil {
		kctx, kcancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer kcancel()
		_ = machine.Kill(kctx)
		return nil, err
	}
	v.log.Info("vm restored from its pool's template", "template", t.Dir, "took", time.Since(t0).Round(time.Millisecond))
	return machine, nil
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
	seed := make([]byte, 64)
	if _, err := rand.Read(seed); err != nil {
		return fmt.Errorf("seed: %w", err)
	}
	b, err := json.Marshal(agentproto.Identity{Config: cfg, MAC: mac, Seed: seed, Now: time.Now()})
	clear(seed)
	if err != nil {
		return fmt.Errorf("identity: %w", err)
	}
	defer clear(b) // it holds the runner's credential
	if err := w.SendIdentity(ctx, b); err != nil {
		return fmt.Errorf("send identity: %w", err)
	}
	return nil
}
