package pool

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
	"github.com/nixos-fireactions/nixos-fireactions/config"
	"github.com/nixos-fireactions/nixos-fireactions/internal/hosttest"
	"github.com/nixos-fireactions/nixos-fireactions/vmstate"
	"github.com/nixos-fireactions/nixos-fireactions/warmstart"
)

// warmCounter records warm-start fallbacks and template builds.
type warmCounter struct {
	mu       sync.Mutex
	reasons  map[warmstart.Reason]int
	built    int
	failures int
}

func (c *warmCounter) WarmStartFallback(_ string, r warmstart.Reason) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.reasons == nil {
		c.reasons = map[warmstart.Reason]int{}
	}
	c.reasons[r]++
}

func (c *warmCounter) WarmTemplateBuilt(_ string, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if ok {
		c.built++
	} else {
		c.failures++
	}
}

func (c *warmCounter) count(r warmstart.Reason) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reasons[r]
}

// warmRig is a harness with a warm-start pool whose kernel is a file of
// its own (its digest is the template key's) and templates in tdir.
type warmRig struct {
	*harness
	c      *warmCounter
	log    *hosttest.SyncBuffer
	tdir   string
	kernel string
}

func newWarmRig(t *testing.T, minIdle, max int, tdir string, before func(*fakeHV)) *warmRig {
	t.Helper()
	kernel := filepath.Join(t.TempDir(), "vmlinuz")
	if err := os.WriteFile(kernel, []byte("kernel v1"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := &warmRig{c: &warmCounter{}, tdir: tdir, kernel: kernel, log: &hosttest.SyncBuffer{}}
	r.harness = newHarnessDeps(t, 20*time.Millisecond, t.TempDir(), minIdle, max, guestRunsOneJob,
		func(pc *config.Pool) { pc.WarmStart, pc.VM.Kernel = true, kernel }, slog.New(slog.NewTextHandler(r.log, nil)), nil, nil,
		func(d *Deps) {
			d.TemplateDir, d.WarmStarts, d.AgentDigest = tdir, r.c, "sha256:agent"
			d.Boot.(*hosttest.Boot).Files = true // the template key digests its initramfs
		})
	if before != nil {
		before(r.hv)
	}
	return r
}

// restoredSpecs are the ids of the VMs started from a template.
func (r *warmRig) restoredSpecs() []string {
	r.hv.mu.Lock()
	defer r.hv.mu.Unlock()
	var ids []string
	for _, s := range r.hv.specs {
		if s.Restore != "" {
			ids = append(ids, s.ID)
		}
	}
	return ids
}

func (r *warmRig) runJobs(t *testing.T, ids ...string) {
	t.Helper()
	r.forge.enqueue(ids...)
	eventually(t, 10*time.Second, "jobs finished", func() bool {
		r.forge.mu.Lock()
		defer r.forge.mu.Unlock()
		return len(r.forge.finished) >= len(ids)
	})
}

// TestWarmPoolRestoresItsVMsFromTheTemplate: a warm-start pool builds its
// template (booted with no address, token or credential, saved), then
// its VMs are restores of it, each handed its own identity (its
// runner's credential among it) and running its job; none has its
// initramfs (the template's) released.
func TestWarmPoolRestoresItsVMsFromTheTemplate(t *testing.T) {
	r := newWarmRig(t, 1, 2, t.TempDir(), nil)
	eventually(t, 5*time.Second, "template saved", func() bool { return r.hv.saves.Load() == 1 || strings.Contains(r.log.String(), "template not built") })
	if r.hv.saves.Load() != 1 {
		t.Fatal(r.log.String())
	}
	eventually(t, 5*time.Second, "a restored VM idle", func() bool {
		return len(r.restoredSpecs()) > 0 && r.m.Phases()[vmstate.Idle] >= 1
	})
	r.runJobs(t, "j1", "j2", "j3")
	if n := r.hv.restores.Load(); n < 3 {
		t.Fatalf("%d VMs restored; want every VM after the template (at least 3)", n)
	}
	// The template's spec and initramfs hold nothing of any VM's.
	tid := templateID("p")
	tcfg := r.boot.Config(tid)
	if tcfg.Report.Token != "" || len(tcfg.Runner.Files) != 0 || tcfg.Network.Address != "" {
		t.Fatalf("the template's config holds a VM's secrets or address: %+v", tcfg)
	}
	r.hv.mu.Lock()
	ids := append([]agentproto.Identity(nil), r.hv.identities...)
	tinit := r.hv.initrds[tid]
	var tspec, restored = r.hv.specs[0], 0
	for _, s := range r.hv.specs {
		if s.ID == tid {
			tspec = s
		}
	}
	for _, fm := range r.hv.machines {
		if fm.spec.Restore != "" && fm.released.Load() != 0 {
			t.Errorf("restored VM %s released its initramfs: the template's", fm.spec.ID)
		}
		if fm.spec.Restore != "" {
			restored++
		}
	}
	r.hv.mu.Unlock()
	if tspec.ID != tid || tspec.Identity == "" || tspec.Restore != "" || len(tinit) == 0 {
		t.Fatalf("template spec %+v, initramfs %d bytes", tspec, len(tinit))
	}
	macs, vms := map[string]bool{}, map[string]bool{}
	for _, id := range ids {
		if len(id.Config.Runner.Files) == 0 {
			t.Errorf("identity of %s carries no runner credential", id.Config.VMID)
		}
		if id.Config.Report.Token == "" || id.Config.Network.Address == "" {
			t.Errorf("identity of %s: no agent token or address", id.Config.VMID)
		}
		secrets := []string{id.Config.Report.Token}
		for _, f := range id.Config.Runner.Files {
			secrets = append(secrets, string(f.Content))
		}
		for _, secret := range secrets {
			if secret != "" && (bytes.Contains(tinit, []byte(secret)) || strings.Contains(tspec.Cmdline, secret)) {
				t.Errorf("the template's initramfs or cmdline holds %s's secret", id.Config.VMID)
			}
		}
		macs[id.MAC], vms[id.Config.VMID] = true, true
	}
	// Addresses are reused once a VM ended; MACs and ids never.
	if len(macs) != len(ids) || len(vms) != len(ids) {
		t.Errorf("restores share MACs or VM ids: %v %v", macs, vms)
	}
	if err := r.drain(t, time.Second); err != nil {
		t.Fatal(err)
	}
	r.assertNothingLeft(t)
}
