package pool

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
	"github.com/nixos-fireactions/nixos-fireactions/config"
	"github.com/nixos-fireactions/nixos-fireactions/forge"
	"github.com/nixos-fireactions/nixos-fireactions/internal/hosttest"
	"github.com/nixos-fireactions/nixos-fireactions/vmm"
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
	agent  string // the guest agent binary, beside tdir
}

// fail is the fake VMM's warmFail, from the start.
// deps, when given, change the pool's dependencies before it starts.
func newWarmRig(t *testing.T, minIdle, max int, tdir, fail string, deps ...func(*Deps)) *warmRig {
	t.Helper()
	return newWarmRigOf(t, minIdle, max, tdir, fail, true, deps...)
}

// newWarmRigOf is newWarmRig whose pool has warm_start as warm says.
func newWarmRigOf(t *testing.T, minIdle, max int, tdir, fail string, warm bool, deps ...func(*Deps)) *warmRig {
	t.Helper()
	// Beside tdir: a rig on the same template directory (a restart)
	// boots the same kernel.
	kernel := tdir + ".vmlinuz"
	if _, err := os.Stat(kernel); err != nil {
		if err := os.WriteFile(kernel, []byte("kernel v1"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	agent := tdir + ".agent"
	if _, err := os.Stat(agent); err != nil {
		if err := os.WriteFile(agent, []byte("agent v1"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	r := &warmRig{c: &warmCounter{}, tdir: tdir, kernel: kernel, agent: agent, log: &hosttest.SyncBuffer{}}
	r.harness = newHarnessDeps(t, 20*time.Millisecond, t.TempDir(), minIdle, max, guestRunsOneJob,
		func(pc *config.Pool) { pc.WarmStart, pc.VM.Kernel = warm, kernel }, slog.New(slog.NewTextHandler(r.log, nil)), nil, nil,
		func(d *Deps) {
			d.TemplateDir, d.WarmStarts, d.Agent = tdir, r.c, agent
			d.Boot.(*hosttest.Boot).Files = true // the template key digests its initramfs
			d.Hypervisor.(*fakeHV).warmFail.Store(fail)
			for _, f := range deps {
				f(d)
			}
		})
	return r
}

// waitBuilds waits for n template builds, failing on a failed one.
func (r *warmRig) waitBuilds(t *testing.T, n int) {
	t.Helper()
	r.waitBuildsEnded(t, n)
	if r.c.failures != 0 {
		t.Fatalf("template build failed:\n%s", r.log.String())
	}
}

// waitBuildsEnded waits for n template builds to end, built or failed.
func (r *warmRig) waitBuildsEnded(t *testing.T, n int) {
	t.Helper()
	eventually(t, 5*time.Second, "template builds ended", func() bool {
		r.c.mu.Lock()
		defer r.c.mu.Unlock()
		return r.c.built+r.c.failures >= n
	})
}

// publishedBuild is the pool's template build now published.
func (r *warmRig) publishedBuild() string {
	w := r.m.warmPoolOf(r.m.pools[0])
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.build
}

// buildRefs is how many restores hold the template build.
func (r *warmRig) buildRefs(build string) int {
	w := r.m.warmPoolOf(r.m.pools[0])
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.refs[build]
}

// fallbacks is how many warm-start fallbacks were counted for reason.
func (r *warmRig) fallbacks(reason warmstart.Reason) int {
	r.c.mu.Lock()
	defer r.c.mu.Unlock()
	return r.c.reasons[reason]
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

// runJob enqueues job id and waits until n jobs have finished.
func (r *warmRig) runJob(t *testing.T, id string, n int) {
	t.Helper()
	r.forge.enqueue(id)
	eventually(t, 10*time.Second, "job "+id+" finished", func() bool {
		r.forge.mu.Lock()
		defer r.forge.mu.Unlock()
		return len(r.forge.finished) >= n
	})
}

func (r *warmRig) runJobs(t *testing.T, ids ...string) {
	t.Helper()
	r.forge.enqueue(ids...)
	r.waitFinished(t, len(ids))
}

// TestWarmPoolRestoresItsVMsFromTheTemplate: a warm-start pool builds its
// template (booted with no address, token or credential, saved), then
// its VMs are restores of it, each handed its own identity (its
// runner's credential among it) and running its job; none has its
// initramfs (the template's) released.
func TestWarmPoolRestoresItsVMsFromTheTemplate(t *testing.T) {
	r := newWarmRig(t, 0, 2, t.TempDir(), "")
	r.waitBuilds(t, 1)
	r.runJobs(t, "j1", "j2", "j3")
	if n, started := r.hv.restores.Load(), len(r.restoredSpecs()); n != 3 || started != 3 {
		t.Fatalf("%d VMs restored (%d started from the template); want each job's VM, 3 (fallbacks %v)", n, started, r.c.reasons)
	}
	// The template's spec and initramfs hold nothing of any VM's.
	tid := r.m.templateID("p")
	tcfg := r.boot.Config("") // a template's config has no VM id
	if !tcfg.Template || tcfg.VMID != "" || tcfg.Report != (agentproto.Reporter{}) || len(tcfg.Runner.Files) != 0 || tcfg.Network.Address != "" || tcfg.Hostname != "" {
		t.Fatalf("the template's config is not a bare template's: %+v", tcfg)
	}
	build := r.build(t)
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
		if want := filepath.Join(build, warmstart.MemoryFile); fm.spec.Restore != "" && (fm.spec.MemoryFile != want || fm.spec.Restore != filepath.Join(build, warmstart.StateFile) || fm.spec.Initramfs != filepath.Join(build, templateInitramfs)) {
			t.Errorf("restored VM %s: state %q, memory file %q, initramfs %q; want the template build %s's", fm.spec.ID, fm.spec.Restore, fm.spec.MemoryFile, fm.spec.Initramfs, build)
		}
		if fm.spec.Restore != "" {
			restored++
		}
	}
	r.hv.mu.Unlock()
	if tspec.ID != tid || tspec.Identity == "" || tspec.Restore != "" || len(tinit) == 0 {
		t.Fatalf("template spec %+v, initramfs %d bytes", tspec, len(tinit))
	}
	if filepath.Base(tspec.MemoryFile) != warmstart.MemoryFile || filepath.Dir(tspec.MemoryFile) != filepath.Dir(tspec.ConsoleLog) {
		t.Errorf("the template's RAM is not a file of its directory: %q", tspec.MemoryFile)
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

// TestWarmStartFallsBackToColdBoots: each way a restore cannot be used
// (the template's build failed, its state or memory file is missing or
// truncated, its manifest names another kernel, the restored monitor
// does not start, does not resume, its guest does not take its
// identity or refuses it) boots the VM
// cold, with the reason counted and logged; the job runs, in a booted VM,
// and no restored monitor is left running.
func TestWarmStartFallsBackToColdBoots(t *testing.T) {
	for _, tc := range []struct {
		name   string
		fail   string                         // fakeHV.warmFail, from the start
		breakT func(t *testing.T, dir string) // the built template, broken
		want   warmstart.Reason
	}{
		{name: "no template", fail: "template", want: warmstart.ReasonNoTemplate},
		{name: "state missing", breakT: func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, warmstart.StateFile)) }, want: warmstart.ReasonStateMissing},
		{name: "state truncated", breakT: func(t *testing.T, dir string) {
			os.Truncate(filepath.Join(dir, warmstart.StateFile), 5)
		}, want: warmstart.ReasonStateTruncated},
		{name: "memory missing", breakT: func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, warmstart.MemoryFile)) }, want: warmstart.ReasonStateMissing},
		{name: "memory truncated", breakT: func(t *testing.T, dir string) {
			os.Truncate(filepath.Join(dir, warmstart.MemoryFile), 4)
		}, want: warmstart.ReasonStateTruncated},
		{name: "another kernel", breakT: func(t *testing.T, dir string) {
			b, _ := os.ReadFile(filepath.Join(dir, warmstart.ManifestFile))
			b = bytes.Replace(b, []byte(`"kernel":"sha256:`), []byte(`"kernel":"sha256:0`), 1)
			os.WriteFile(filepath.Join(dir, warmstart.ManifestFile), b, 0o600)
		}, want: warmstart.ReasonKernelMismatch},
		{name: "monitor does not start", fail: "start", want: warmstart.ReasonRestoreFailed},
		{name: "resume fails", fail: "resume", want: warmstart.ReasonRestoreFailed},
		{name: "identity not taken", fail: "identity", want: warmstart.ReasonRestoreFailed},
		{name: "identity refused", fail: "identity-refused", want: warmstart.ReasonIdentityRefused},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newWarmRig(t, 0, 1, t.TempDir(), tc.fail)
			built := func() bool {
				r.c.mu.Lock()
				defer r.c.mu.Unlock()
				return r.c.built+r.c.failures > 0
			}
			eventually(t, 5*time.Second, "template built or failed", built)
			if tc.breakT != nil {
				tc.breakT(t, r.build(t))
			}
			r.runJobs(t, "j1")
			if n := r.c.count(tc.want); n != 1 {
				t.Errorf("%s fallbacks counted %d times; want 1 (all: %v)", tc.want, n, r.c.reasons)
			}
			if !strings.Contains(r.log.String(), "reason="+string(tc.want)) {
				t.Errorf("no log line with reason=%s:\n%s", tc.want, r.log.String())
			}
			if n := r.hv.restores.Load(); n != 0 {
				t.Errorf("%d VMs restored", n)
			}
			// The job's VM: the last not the template's (a damaged
			// template is built again meanwhile).
			var last vmm.Spec
			r.hv.mu.Lock()
			for _, s := range r.hv.specs {
				if s.ID != r.m.templateID("p") {
					last = s
				}
			}
			r.hv.mu.Unlock()
			if last.Restore != "" || last.Identity != "" {
				t.Errorf("the job's VM was not booted cold: %+v", last)
			}
			if err := r.drain(t, time.Second); err != nil {
				t.Fatal(err)
			}
			r.assertNothingLeft(t)
		})
	}
}

// TestTemplateRebuiltWhenItsKeyChanges: a new kernel rebuilds the
// template (a new manifest naming the new kernel's digest), and the
// next VMs are restores of it.
func TestTemplateRebuiltWhenItsKeyChanges(t *testing.T) {
	r := newWarmRig(t, 0, 1, t.TempDir(), "")
	r.waitBuilds(t, 1)
	before, _ := os.ReadFile(filepath.Join(r.build(t), warmstart.ManifestFile))
	if err := os.WriteFile(r.kernel, []byte("kernel v2, longer"), 0o644); err != nil {
		t.Fatal(err)
	}
	r.waitBuilds(t, 2)
	if n := r.hv.saves.Load(); n != 2 {
		t.Fatalf("%d templates saved; want 2", n)
	}
	after, _ := os.ReadFile(filepath.Join(r.build(t), warmstart.ManifestFile))
	v2, _ := warmstart.FileDigest(r.kernel)
	if bytes.Equal(before, after) || !bytes.Contains(after, []byte(v2)) {
		t.Fatalf("manifest before %s, after %s; want the new kernel %s", before, after, v2)
	}
	r.runJobs(t, "j1")
	if n := r.hv.restores.Load(); n != 1 {
		t.Fatalf("%d restores after the rebuild; want 1 (fallbacks %v)", n, r.c.reasons)
	}
}

// TestTemplateOfAPoolAReloadMakesWarmIsKeyedByTheAgent: a pool that
// boots cold at start and is made warm by a reload builds a template
// whose key names the agent binary's digest (not an empty one: the agent
// is hashed when a template is built, not at start for the warm pools of
// then), and a new agent binary rebuilds it.
func TestTemplateOfAPoolAReloadMakesWarmIsKeyedByTheAgent(t *testing.T) {
	r := newWarmRigOf(t, 0, 1, t.TempDir(), "", false)
	warm := r.poolConfig()
	warm.WarmStart = true
	if _, err := r.m.Reload(t.Context(), []config.Pool{warm}, map[string]forge.Forge{"p": r.forge}); err != nil {
		t.Fatal(err)
	}
	r.waitBuilds(t, 1)
	var got struct{ Key warmstart.Key }
	b, _ := os.ReadFile(filepath.Join(r.build(t), warmstart.ManifestFile))
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("manifest %s: %v", b, err)
	}
	v1, _ := warmstart.FileDigest(r.agent)
	if got.Key.Agent != v1 {
		t.Fatalf("template key's agent %q after the reload; want the agent binary's digest %s", got.Key.Agent, v1)
	}
	if err := os.WriteFile(r.agent, []byte("agent v2, longer"), 0o755); err != nil {
		t.Fatal(err)
	}
	r.waitBuilds(t, 2)
	b, _ = os.ReadFile(filepath.Join(r.build(t), warmstart.ManifestFile))
	v2, _ := warmstart.FileDigest(r.agent)
	if err := json.Unmarshal(b, &got); err != nil || got.Key.Agent != v2 {
		t.Fatalf("after a new agent binary the key's agent is %q (%v); want %s", got.Key.Agent, err, v2)
	}
}

// TestTemplateOfAPreviousRunAdoptedWhenWholeElseReplaced: a restart with
// the same files adopts the template on disk (no new save) and restores
// from it; one whose template's state was truncated meanwhile builds a
// new one.
func TestTemplateOfAPreviousRunAdoptedWhenWholeElseReplaced(t *testing.T) {
	tdir := t.TempDir()
	first := newWarmRig(t, 0, 1, tdir, "")
	first.waitBuilds(t, 1)
	first.drain(t, time.Second)

	again := newWarmRig(t, 0, 1, tdir, "")
	eventually(t, 5*time.Second, "template adopted", func() bool { return strings.Contains(again.log.String(), "template adopted") })
	again.runJobs(t, "j1")
	if s, n := again.hv.saves.Load(), again.hv.restores.Load(); s != 0 || n != 1 {
		t.Fatalf("after a restart: %d templates saved, %d VMs restored; want 0 and 1", s, n)
	}
	again.drain(t, time.Second)

	os.Truncate(filepath.Join(again.build(t), warmstart.StateFile), 3)
	third := newWarmRig(t, 0, 1, tdir, "")
	third.waitBuilds(t, 1)
	if !strings.Contains(third.log.String(), "template replaced") || !strings.Contains(third.log.String(), "reason=state_truncated") {
		t.Errorf("no log line of the truncated template replaced:\n%s", third.log.String())
	}
	third.runJobs(t, "j1")
	if n := third.hv.restores.Load(); n != 1 {
		t.Fatalf("%d VMs restored from the rebuilt template", n)
	}
}

// TestTemplatesOfNoWarmPoolRemovedAtStart: a start removes what the
// template directory holds for pools that are gone or cold (and the
// build directory of the layout before builds had their own), and keeps
// the warm pool's.
func TestTemplatesOfNoWarmPoolRemovedAtStart(t *testing.T) {
	tdir := t.TempDir()
	for _, d := range []string{"gone", "gone.build", "p.build", "p"} {
		os.MkdirAll(filepath.Join(tdir, d), 0o700)
	}
	r := newWarmRig(t, 0, 1, tdir, "")
	r.waitBuilds(t, 1)
	for _, d := range []string{"gone", "gone.build", "p.build"} {
		if _, err := os.Stat(filepath.Join(tdir, d)); err == nil {
			t.Errorf("%s left", d)
		}
	}
	if _, err := os.Stat(filepath.Join(r.build(t), warmstart.ManifestFile)); err != nil {
		t.Errorf("the warm pool's template: %v", err)
	}
}

// TestADamagedTemplateIsRebuiltAtOnce: a template whose memory file is
// cut short after its seal restores no VM (the first boots cold, the
// reason counted) and is built again at the next full pass, without a
// change of the pool's files or a restart; the next VM is a restore of
// the new one.
func TestADamagedTemplateIsRebuiltAtOnce(t *testing.T) {
	r := newWarmRig(t, 0, 1, t.TempDir(), "")
	r.waitBuilds(t, 1)
	if err := os.Truncate(filepath.Join(r.build(t), warmstart.MemoryFile), 4); err != nil {
		t.Fatal(err)
	}
	r.runJobs(t, "j1")
	if n := r.c.count(warmstart.ReasonStateTruncated); n != 1 || r.hv.restores.Load() != 0 {
		t.Fatalf("%d state_truncated cold boots, %d restores; want 1 and 0", n, r.hv.restores.Load())
	}
	r.waitBuilds(t, 2)
	r.runJob(t, "j2", 2)
	if n := r.hv.restores.Load(); n != 1 {
		t.Fatalf("%d restores after the rebuild; want 1 (fallbacks %v)", n, r.c.reasons)
	}
	// Damaged again within templateRetry: no build per pass, the retry
	// after a failed build's wait instead.
	if err := os.Truncate(filepath.Join(r.build(t), warmstart.MemoryFile), 4); err != nil {
		t.Fatal(err)
	}
	r.runJob(t, "j3", 3)
	time.Sleep(300 * time.Millisecond) // many passes
	r.c.mu.Lock()
	defer r.c.mu.Unlock()
	if r.c.built != 2 {
		t.Fatalf("%d builds after a second damage within a minute; want 2 until the retry", r.c.built)
	}
}

// liveSlots are the slots of the fake VMM's machines still running, by
// VM id.
func (h *fakeHV) liveSlots() map[string]int {
	h.mu.Lock()
	defer h.mu.Unlock()
	live := map[string]int{}
	for _, fm := range h.machines {
		select {
		case <-fm.done:
		default:
			live[fm.spec.ID] = fm.spec.Slot
		}
	}
	return live
}

// TestTemplatesBuildingAtOnceRunInSlotsOfTheirOwn: two warm pools'
// template VMs, alive at once beside a pool's idle VM, each have a slot
// (the Firecracker jailer's uid and gid) no other live VM has, taken from
// the VMs' allocator (never slot 0, the network's address) and given
// back once built.
func TestTemplatesBuildingAtOnceRunInSlotsOfTheirOwn(t *testing.T) {
	gate := make(chan struct{})
	r := newWarmRig(t, 1, 2, t.TempDir(), "", func(d *Deps) {
		q := d.Config.Pools[0]
		q.Name = "q"
		d.Config.Pools = append(d.Config.Pools, q)
		d.Forges["q"] = d.Forges["p"]
		d.Hypervisor.(*fakeHV).saveGate = gate
	})
	var live map[string]int
	eventually(t, 5*time.Second, "both templates and an idle VM running", func() bool {
		live = r.hv.liveSlots()
		_, p := live[r.m.templateID("p")]
		_, q := live[r.m.templateID("q")]
		return p && q && len(live) >= 3
	})
	seen := map[int]string{}
	for id, slot := range live {
		if other, ok := seen[slot]; ok || slot <= 0 {
			t.Errorf("vm %s runs in slot %d (also vm %q's)", id, slot, other)
		}
		seen[slot] = id
	}
	close(gate)
	r.waitBuilds(t, 2)
	if err := r.drain(t, time.Second); err != nil {
		t.Fatal(err)
	}
	// Before assertNothingLeft, whose own probes take the lowest
	// addresses (a template's among them, when it had one).
	for _, id := range []string{r.m.templateID("p"), r.m.templateID("q")} {
		addr := netip.AddrFrom4([4]byte{10, 200, 0, byte(live[id])})
		if err := r.alloc.Reserve(addr, "probe-"+id); err != nil {
			t.Errorf("template %s's slot not given back: %v", id, err)
			continue
		}
		r.alloc.Release(addr, "probe-"+id)
	}
	r.assertNothingLeft(t)
}

// TestATemplateWhoseKillFailedKeepsItsSlotAndIsNotPublished: a template
// build whose monitor's Kill failed (it may still run as its slot's uid,
// and still write the memory file it maps) keeps its slot allocated, so
// that no VM started later runs as the same user, says so in the log,
// and is a failed build: what it saved is never published.
func TestATemplateWhoseKillFailedKeepsItsSlotAndIsNotPublished(t *testing.T) {
	t.Run("its kill after the save failed", func(t *testing.T) {
		templateKillFailedKeepsItsSlot(t, newWarmRig(t, 0, 1, t.TempDir(), "", func(d *Deps) {
			d.Hypervisor.(*fakeHV).templateKillFails.Store(true)
		}))
	})
	// Start returned the monitor with its error (vmm.Hypervisor).
	t.Run("its start failed and the driver could not kill it", func(t *testing.T) {
		templateKillFailedKeepsItsSlot(t, newWarmRig(t, 0, 1, t.TempDir(), "", func(d *Deps) {
			d.Hypervisor.(*fakeHV).warmFail.Store("template-start-unkillable")
		}))
	})
}

func templateKillFailedKeepsItsSlot(t *testing.T, r *warmRig) {
	t.Helper()
	r.waitBuildsEnded(t, 1)
	r.c.mu.Lock()
	built, failures := r.c.built, r.c.failures
	r.c.mu.Unlock()
	if built != 0 || failures == 0 {
		t.Errorf("template builds: %d built, %d failed; want the build whose VM is not known gone failed", built, failures)
	}
	if b, err := warmstart.Current(filepath.Join(r.tdir, "p")); err == nil {
		t.Errorf("the build %s whose template VM is not known gone was published", b)
	}
	var slot int
	r.hv.mu.Lock()
	for _, s := range r.hv.specs {
		if s.ID == r.m.templateID("p") {
			slot = s.Slot
		}
	}
	r.hv.mu.Unlock()
	if slot <= 0 {
		t.Fatalf("no template VM started in a slot")
	}
	addr := netip.AddrFrom4([4]byte{10, 200, 0, byte(slot)})
	if err := r.alloc.Reserve(addr, "probe"); err == nil {
		t.Errorf("the slot %d of a template whose kill failed was given back", slot)
	}
	if !strings.Contains(r.log.String(), "slot kept") {
		t.Errorf("no log line says the slot is kept:\n%s", r.log.String())
	}
}

// A restore that failed and whose monitor's Kill failed too is not
// followed by a cold boot in its slot: that monitor may still run as
// the slot's user. The VM fails and its slot (its address) is kept,
// as a template's is.
func TestARestoreWhoseKillFailedIsNotBootedColdInItsSlot(t *testing.T) {
	t.Run("its resume failed", func(t *testing.T) {
		r := newWarmRig(t, 0, 1, t.TempDir(), "", func(d *Deps) {
			d.Hypervisor.(*fakeHV).restoreKillFails.Store(true)
		})
		r.waitBuilds(t, 1)
		r.hv.warmFail.Store("resume")
		restoreNotBootedColdInItsSlot(t, r)
	})
	// Start returned the monitor with its error: the driver's own kill
	// failed (vmm.Hypervisor), so no runner is registered for the VM.
	t.Run("its start failed and the driver could not kill it", func(t *testing.T) {
		r := newWarmRig(t, 0, 1, t.TempDir(), "")
		r.waitBuilds(t, 1)
		build := r.publishedBuild()
		r.hv.warmFail.Store("restore-start-unkillable")
		restoreNotBootedColdInItsSlot(t, r)
		if n := r.fallbacks(warmstart.ReasonRestoreKillFailed); n < 1 {
			t.Errorf("restore_kill_failed fallbacks = %d; want at least 1", n)
		}
		// Its monitor may still map the build's files: held, as long as
		// no Kill of it succeeded (none does).
		if refs := r.buildRefs(build); refs < 1 {
			t.Errorf("build %s held by %d restores; want held while the monitor is not known gone", build, refs)
		}
	})
}

func restoreNotBootedColdInItsSlot(t *testing.T, r *warmRig) {
	t.Helper()
	r.forge.enqueue("j1")
	var restore vmm.Spec
	var after int // the specs started after the restore's
	eventually(t, 10*time.Second, "a restore started", func() bool {
		r.hv.mu.Lock()
		defer r.hv.mu.Unlock()
		for i, s := range r.hv.specs {
			if s.Restore != "" {
				restore, after = s, i+1
				return true
			}
		}
		return false
	})
	// Either the slot is kept (logged) or a VM boots cold in it.
	coldInSlot := func() (cold vmm.Spec, ok bool) {
		r.hv.mu.Lock()
		defer r.hv.mu.Unlock()
		for _, s := range r.hv.specs[after:] {
			if s.Restore == "" && (s.ID == restore.ID || s.Slot == restore.Slot) {
				return s, true
			}
		}
		return vmm.Spec{}, false
	}
	eventually(t, 10*time.Second, "the restore's VM failed or booted cold", func() bool {
		_, cold := coldInSlot()
		return cold || strings.Contains(r.log.String(), "not known gone")
	})
	if s, ok := coldInSlot(); ok {
		t.Fatalf("VM %s booted cold in slot %d beside the restore %s whose kill failed", s.ID, s.Slot, restore.ID)
	}
	addr := netip.AddrFrom4([4]byte{10, 200, 0, byte(restore.Slot)})
	// The slot outlives this run: the record stays, Failed with the
	// monitor's PID, for the next start's Recover to kill it or hold the
	// address again; and the slot is not given back in this one (checked
	// once that record, saved at the VM's teardown's end, is there).
	defer func() {
		if t.Failed() {
			t.Log(r.log.String())
		}
	}()
	eventually(t, 10*time.Second, "the record of the vm not known gone saved", func() bool {
		recs, err := r.store.List()
		if err != nil {
			t.Fatal(err)
		}
		for _, rec := range recs {
			if rec.ID == restore.ID {
				return rec.Phase == vmstate.Failed && rec.PID > 0 && rec.Address == addr.String()
			}
		}
		return false
	})
	if err := r.alloc.Reserve(addr, "probe"); err == nil {
		t.Errorf("the slot %d of a restore whose kill failed was given back", restore.Slot)
	}
}

// A restore that failed and whose monitor's Kill failed is counted
// among the warm-start fallbacks (restore_kill_failed), and the template
// build its monitor maps is kept while that monitor is not known gone:
// released once the VM's teardown ends it, kept when that fails too.
func TestAFailedRestoreWhoseKillFailedIsCountedAndKeepsItsBuildUntilItsMonitorIsGone(t *testing.T) {
	for _, tc := range []struct {
		name         string
		killFailures int32 // the restore's Kills that fail: finishRestore's, then the teardown's
		keptAfter    bool  // the build still held once the VM's teardown is done
	}{
		{"its teardown ends it", 1, false},
		{"its teardown's kill fails too", 2, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newWarmRig(t, 0, 1, t.TempDir(), "", func(d *Deps) {
				d.Hypervisor.(*fakeHV).restoreKillFailures.Store(tc.killFailures)
			})
			r.waitBuilds(t, 1)
			build := r.publishedBuild()
			r.hv.warmFail.Store("resume")
			// One VM: its job leaves the queue as its runner registers.
			r.forge.onRegister = func(forge.RunnerSpec) {
				r.forge.mu.Lock()
				r.forge.queue = nil
				r.forge.mu.Unlock()
			}
			r.forge.enqueue("j1")
			eventually(t, 10*time.Second, "a restore started", func() bool {
				r.hv.mu.Lock()
				defer r.hv.mu.Unlock()
				for _, s := range r.hv.specs {
					if s.Restore != "" {
						return true
					}
				}
				return false
			})
			eventually(t, 10*time.Second, "the restore's VM torn down", func() bool {
				r.m.mu.Lock()
				defer r.m.mu.Unlock()
				return len(r.m.vms) == 0
			})
			if n := r.fallbacks(warmstart.ReasonRestoreKillFailed); n != 1 {
				t.Errorf("restore_kill_failed fallbacks = %d; want 1", n)
			}
			refs := r.buildRefs(build)
			if kept := refs > 0; kept != tc.keptAfter {
				t.Errorf("build %s held by %d restores after the teardown; want held %v", build, refs, tc.keptAfter)
			}
		})
	}
}
