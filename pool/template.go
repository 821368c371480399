package pool

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
	"github.com/nixos-fireactions/nixos-fireactions/config"
	"github.com/nixos-fireactions/nixos-fireactions/netplan"
	"github.com/nixos-fireactions/nixos-fireactions/vmm"
	"github.com/nixos-fireactions/nixos-fireactions/warmstart"
)

// A warm-start pool's template (see package warmstart) is built here: a
// VM booted from the pool's kernel and boot archive with a config that
// holds no address, no agent token and no runner credential, and an
// identity channel (Spec.Identity) its agent waits on; once its console
// says it waits, the VMM saves it into a new build directory of the
// pool's template directory (warmstart.NewBuild), warmstart.Seal writes
// the manifest and warmstart.Publish makes it the current build. The VM
// is killed, its TAP removed. A restore takes the current build once
// (acquire) and every file from it; a build no longer current is removed
// when its last restore releases it (in the background, not in that VM's
// start: releaseBuild) or, when none held it, right after
// the build that replaced it was published; at start
// (removeStaleTemplates) every build but the published one goes, being
// what a crash left: a build never published, or the one a publish
// replaced just before the crash. Reference counts, not a grace period:
// a restore may take up to restoreTimeout, and a count needs no guess.
// Each full reconcile pass looks at the pool's files (cheaply: their
// sizes and times) and rebuilds, in the background and within a bounded
// time, when they changed; meanwhile, and when a build fails (logged,
// counted), the pool's VMs boot cold. A template a previous run left is
// adopted when it is whole and made from the same key, else replaced.

// TemplateWaiting is what the guest agent booted as a template
// (agentproto.Config.Template) writes on its console once it waits for
// its identity (guest/agent's awaitIdentity): the host saves the VM then.
const TemplateWaiting = "template: waiting for identity on " + agentproto.IdentityPort

// Files of a template directory besides warmstart's.
const (
	templateInitramfs = "initramfs.cpio" // the credential-free initramfs the template booted, which its restores map
	templateConsole   = "console.log"
)

// templateRetry is how long after a failed build the next is tried.
const templateRetry = time.Minute

// TemplateCounter counts template builds (the metrics package's
// fireactions_warm_start_template_builds_total).
type TemplateCounter interface {
	WarmTemplateBuilt(pool string, ok bool)
}

// warmPool is one warm-start pool's template state, kept by pool name
// across reloads (a reload makes a new pool; one build per name at once).
type warmPool struct {
	name    string
	dir     string // the pool's template directory
	chooser *warmstart.Chooser

	mu       sync.Mutex
	building bool
	seen     string        // fingerprint of the files the last build or adoption looked at
	key      warmstart.Key // the template's key, when one was built or adopted
	root     string        // the image root the template booted (rootOf); "" for an initramfs root
	build    string        // the published build's directory, "" before one is built or adopted
	ok       bool          // key is a template's, build's
	failedAt time.Time
	refs     map[string]int // restores reading each build, by its directory

	// files orders prunes with a build's making of its directory and
	// its publishing: a prune neither removes the build under way nor
	// sees the link a publish is renaming into place.
	files  sync.Mutex
	making string // under files: the directory of the build under way
	// damagedAt is when a VM last found the template's files damaged.
	damagedAt time.Time
	// beforePrune, under mu, is called as a prune begins, before it
	// removes anything: a test holds it to see what waits for a prune.
	beforePrune func()
}

// warmPoolOf is p's warm-start state, nil for a pool that boots cold.
func (m *Manager) warmPoolOf(p *pool) *warmPool {
	if !p.cfg.WarmStart || m.d.TemplateDir == "" {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	w := m.warm[p.cfg.Name]
	if w == nil {
		w = &warmPool{
			name:    p.cfg.Name,
			dir:     filepath.Join(m.d.TemplateDir, p.cfg.Name),
			chooser: &warmstart.Chooser{Pool: p.cfg.Name, Log: m.log, Metrics: m.d.WarmStarts},
		}
		// A template whose files a VM finds damaged is built again at
		// the next full pass.
		w.chooser.Rebuild = func(build string) { w.damaged(build, m.log) }
		m.warm[p.cfg.Name] = w
	}
	return w
}

// templateID names pool's template VM: 12 characters, so its TAP name
// fits, and never a VM id (those are hex only). The manager's template
// directory (under its own state directory) is hashed in with the pool's
// name: two daemons on one host, with pools of the same name, never
// share an id, so neither's reapTemplates ends the other's template,
// while a restart of one daemon finds its own by the same id.
func (m *Manager) templateID(pool string) string {
	h := sha256.Sum256([]byte(filepath.Clean(m.d.TemplateDir) + "\x00" + pool))
	return "tp" + hex.EncodeToString(h[:5])
}

// fingerprint is what says, cheaply, that a template may be stale: the
// pool's shape and the sizes and times of its kernel, root archive and
// agent. A change sends the build, which decides by the Key's digests.
func (m *Manager) fingerprint(pc config.Pool) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s|%+v", m.d.Hypervisor.Name(), pc.VM)
	for _, f := range []string{pc.VM.Kernel, pc.VM.RootInitramfs, m.d.Agent} {
		st, err := os.Stat(f)
		if err != nil {
			fmt.Fprintf(&b, "|%s:-", f)
			continue
		}
		fmt.Fprintf(&b, "|%s:%d:%d", f, st.Size(), st.ModTime().UnixNano())
	}
	return b.String()
}

// ensureTemplate starts a build of p's template in the background when
// its files changed since the last build or a failed build's retry time
// came. It returns at once.
func (m *Manager) ensureTemplate(ctx context.Context, p *pool) {
	w := m.warmPoolOf(p)
	if w == nil {
		return
	}
	m.mu.Lock() // a reload's resize writes p.cfg under it
	pc := p.cfg
	m.mu.Unlock()
	fp := m.fingerprint(pc)
	w.mu.Lock()
	if fp != w.seen && w.ok {
		// The files changed: until a build says the template was made
		// from them (it may adopt it), no VM is restored from it.
		w.ok = false
	}
	stale := fp != w.seen || (!w.ok && time.Since(w.failedAt) >= templateRetry)
	if w.building || !stale {
		w.mu.Unlock()
		return
	}
	// Added under m.mu, as startVM does: Drain waits for it.
	m.mu.Lock()
	if m.draining {
		m.mu.Unlock()
		w.mu.Unlock()
		return
	}
	m.wg.Add(1)
	m.mu.Unlock()
	w.building = true
	w.mu.Unlock()
	go func() {
		defer m.wg.Done()
		// Run's end (the daemon draining) ends a build.
		key, root, build, err := m.buildTemplate(ctx, w, pc)
		w.mu.Lock()
		w.building, w.seen = false, fp
		w.ok, w.key, w.root = err == nil, key, root
		if err == nil {
			w.build = build
		}
		if err != nil {
			w.failedAt = time.Now()
		}
		w.mu.Unlock()
		w.prune(m.log)
		if ctx.Err() != nil {
			return // the daemon stops: no failure to count or log
		}
		if c, ok := m.d.WarmStarts.(TemplateCounter); ok {
			c.WarmTemplateBuilt(pc.Name, err == nil)
		}
		if err != nil {
			m.log.Error("warm start: template not built; the pool's VMs boot cold", "pool", pc.Name, "err", err, "retry_in", templateRetry)
		}
	}()
}

// damaged is a VM finding the files of build (the one acquire gave it)
// gone or not whole: the next full pass builds the template again, or,
// when that happened within templateRetry already (a build whose
// templates do not stay whole), the retry after a failed build does, so
// damage never makes a build per pass. A report about a build no longer
// published is stale (a rebuild replaced it meanwhile) and ignored.
func (w *warmPool) damaged(build string, log *slog.Logger) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.replaced(build, "its files damaged", log) {
		return
	}
	if time.Since(w.damagedAt) < templateRetry {
		w.ok, w.failedAt = false, time.Now()
	} else {
		w.ok, w.seen = false, ""
	}
	w.damagedAt = time.Now()
}

// acquire is the key of p's template, the image root it booted (rootOf;
// "" for an initramfs root) and its build directory, which is not
// removed before a release of it; ok false (and nothing to release)
// while it has none.
func (w *warmPool) acquire() (key warmstart.Key, root, build string, ok bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.ok {
		return w.key, w.root, "", false
	}
	if w.refs == nil {
		w.refs = map[string]int{}
	}
	w.refs[w.build]++
	return w.key, w.root, w.build, true
}

// release ends a restore's use of build (from acquire). It reports
// whether that was the last restore of a build no longer published,
// which then is to go (releaseBuild removes it).
func (w *warmPool) release(build string) (gone bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.refs[build]--
	gone = w.refs[build] <= 0 && build != w.build
	if w.refs[build] <= 0 {
		delete(w.refs, build)
	}
	return gone
}

// releaseBuild ends a restore's use of w's build (from acquire). The
// last release of a build no longer published removes it, as
// ensureTemplate builds: in a goroutine Drain waits for (m.wg), never in
// the VM's start, which the removal of a memory file of GiBs would hold.
func (m *Manager) releaseBuild(w *warmPool, build string) {
	if !w.release(build) {
		return
	}
	// The caller, a VM's start, runs in its VM's goroutine, which holds
	// m.wg (runVM): this Add never races a Wait that saw it at zero.
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		w.prune(m.log)
	}()
}

// prune removes the pool's builds that are neither published, nor read
// by a restore, nor under way.
func (w *warmPool) prune(log *slog.Logger) {
	w.mu.Lock()
	hook := w.beforePrune
	w.mu.Unlock()
	if hook != nil {
		hook()
	}
	w.files.Lock()
	defer w.files.Unlock()
	removed, err := warmstart.Prune(w.dir, func(build string) bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		return w.refs[build] > 0 || build == w.build || build == w.making || holdsTemplateSlot(build)
	})
	for _, p := range removed {
		log.Info("warm start: removed a template build no restore reads", "pool", w.name, "path", p)
	}
	if err != nil {
		log.Error("warm start: remove old template builds", "pool", w.name, "err", err)
	}
}

// rebuild makes the next full pass build the template again: a VM found
// the pool's image moved on (a tag that Refresh resolved anew) from the
// one build, the template it acquired, booted. A report about a build
// published no longer is ignored.
func (w *warmPool) rebuild(build string, log *slog.Logger) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.replaced(build, "another image than the VM's", log) {
		return
	}
	w.ok, w.seen = false, ""
}

// replaced reports, and logs, that a VM's report (what) is about build,
// which is not the published one any more: the build that replaced it
// is not what the VM found wrong. The caller holds w.mu.
func (w *warmPool) replaced(build, what string, log *slog.Logger) bool {
	if build == w.build {
		return false
	}
	log.Info("warm start: a report about a replaced template build ignored", "pool", w.name, "report", what, "build", build, "published", w.build)
	return true
}

// templateKey is the Key of a template of pc booted from initrd, and of
// the image root (rootOf) for an image pool ("" for an initramfs root).
// Key.Image covers what else a restore must share with its template: the
// boot archive (agent, modules), the VM's shape and cmdline and, for an
// image pool, the image (the template's kernel has probed its drive) and
// the writable disk's size (its drive's capacity is in the template's
// memory).
func (m *Manager) templateKey(ctx context.Context, pc config.Pool, initrd, root string) (warmstart.Key, error) {
	var k warmstart.Key
	k.VMM = m.d.Hypervisor.Name()
	if v, ok := m.d.Hypervisor.(interface {
		Version(context.Context) (string, error)
	}); ok {
		ver, err := v.Version(ctx)
		if err != nil {
			return k, err
		}
		k.VMM = ver
	}
	var err error
	if k.Kernel, err = warmstart.FileDigest(pc.VM.Kernel); err != nil {
		return k, err
	}
	archive, err := warmstart.FileDigest(initrd)
	if err != nil {
		return k, err
	}
	b := fmt.Appendf(nil, "%s|vcpus=%d|memory_mib=%d|cmdline=%q", archive, pc.VM.VCPUs, pc.VM.MemoryMiB, pc.VM.Cmdline)
	// What the hypervisor adds to the kernel's command line (QEMU under
	// TCG: the guest's TSC rate, the host's) is the template's too: its
	// kernel booted with it, and every restore keeps its clock's rate.
	if a, ok := m.d.Hypervisor.(interface{ AccelCmdline() string }); ok {
		b = fmt.Appendf(b, "|accel_cmdline=%q", a.AccelCmdline())
	}
	if root != "" {
		b = fmt.Appendf(b, "|image=%s|disk_mib=%d", root, pc.VM.DiskMiB)
	}
	h := sha256.Sum256(b)
	k.Image = "sha256:" + hex.EncodeToString(h[:])
	if m.d.Agent == "" {
		return k, errors.New("no guest agent binary to key the template by")
	}
	if k.Agent, err = warmstart.FileDigest(m.d.Agent); err != nil {
		return k, err
	}
	return k, nil
}

// buildTemplate adopts the template published in w.dir when it was made
// from the pool's current key, else boots, saves and seals a new build
// and publishes it. A build takes at most the pool's boot timeout and a
// minute more. It returns the key, for an image pool the image root the
// template booted (rootOf), and the directory of the build it adopted or
// published ("" when none).
func (m *Manager) buildTemplate(ctx context.Context, w *warmPool, pc config.Pool) (warmstart.Key, string, string, error) {
	ctx, cancel := context.WithTimeout(ctx, pc.Timeouts.Boot+time.Minute)
	defer cancel()
	id := m.templateID(pc.Name)
	log := m.log.With("pool", pc.Name, "vm", id)
	m.reapTemplate(ctx, id, log)
	w.files.Lock()
	build, err := warmstart.NewBuild(w.dir)
	w.making = build
	w.files.Unlock()
	if err != nil {
		return warmstart.Key{}, "", "", err
	}
	published := false
	defer func() {
		w.files.Lock()
		defer w.files.Unlock()
		w.making = ""
		// A publish that failed after its rename (syncing the pool's
		// directory) leaves the link naming this build: it stays; so
		// does a build whose template VM is not known gone (its slot
		// record).
		if cur, err := warmstart.Current(w.dir); !published && (err != nil || cur != build) && !holdsTemplateSlot(build) {
			_ = os.RemoveAll(build)
		}
	}()
	// An image pool's template boots with the drives its restores have,
	// in their order (vmm.Spec.Restore): the pool's image, by digest,
	// and a writable disk of the pool's size that its agent never
	// mounts (it waits for its identity before it touches a disk); each
	// restore brings its own. The lease is the build's only.
	var root VMRoot
	if m.d.Roots != nil {
		r, ok, err := m.d.Roots.PrepareVM(ctx, pc.Name, build)
		if err != nil {
			return warmstart.Key{}, "", "", fmt.Errorf("template root disks: %w", err)
		}
		if ok {
			root = r
			defer r.Release()
		}
	}
	imageRoot := rootOf(root)
	initrd := filepath.Join(build, templateInitramfs)
	// A template's config: no VM id, hostname, address, agent token,
	// runner credential or root (the agent refuses one that has any):
	// those reach each restore over its identity channel.
	if err := m.d.Boot.WriteVM(pc.Name, initrd, agentproto.Config{Template: true}); err != nil {
		return warmstart.Key{}, "", "", fmt.Errorf("write the template's initramfs: %w", err)
	}
	key, err := m.templateKey(ctx, pc, initrd, imageRoot)
	if err != nil {
		return key, "", "", fmt.Errorf("template key: %w", err)
	}
	current, err := warmstart.Current(w.dir)
	if err == nil {
		_, err = warmstart.Open(current, key)
	}
	if err == nil {
		log.Info("warm start: template adopted", "dir", current, "image", imageRoot)
		return key, imageRoot, current, nil
	} else if f := warmstart.AsFallback(err); f.Reason != warmstart.ReasonNoTemplate {
		log.Info("warm start: template replaced", "reason", string(f.Reason), "detail", f.Detail)
	}
	t0 := time.Now()
	if err := m.bootAndSave(ctx, pc, id, build, initrd, root, log); err != nil {
		return key, "", "", err
	}
	if err := warmstart.Seal(build, key); err != nil {
		return key, "", "", err
	}
	// The new build becomes current in one rename; the old one stays
	// for the restores reading it (prune removes it after them).
	w.files.Lock()
	err = warmstart.Publish(build)
	w.files.Unlock()
	if err != nil {
		return key, "", "", err
	}
	published = true
	log.Info("warm start: template built", "dir", build, "image", imageRoot, "took", time.Since(t0).Round(time.Millisecond))
	return key, imageRoot, build, nil
}

// bootAndSave boots the template VM in dir, with root's drives when it
// has one, waits for its agent to wait for its identity, and saves it to
// dir's warmstart.StateFile (and, with a driver that keeps guest RAM in a
// file, its RAM in MemoryFile). The writable disk root made in dir goes
// once saved: no restore reads it.
func (m *Manager) bootAndSave(ctx context.Context, pc config.Pool, id, dir, initrd string, root VMRoot, log *slog.Logger) (err error) {
	tap, err := netplan.TAPName(id)
	if err != nil {
		return err
	}
	_ = m.d.Network.DeleteTAP(tap) // a crashed build's
	// A TAP, for the same devices as its restores, never admitted: the
	// template has no address and sends nothing.
	if err := m.d.Network.AddTAP(tap); err != nil {
		return fmt.Errorf("template TAP: %w", err)
	}
	defer func() {
		if err := m.d.Network.DeleteTAP(tap); err != nil {
			log.Error("remove the template's TAP", "tap", tap, "err", err)
		}
	}()
	slot, err := m.templateSlot(id)
	if err != nil {
		return err
	}
	// The slot goes back once the VM is known gone: a monitor whose
	// Kill failed may still run as its user, and a leaked slot is
	// better than two VMs with one uid. Its record in dir keeps it
	// across a crash or restart (templateSlotFile).
	if err := recordTemplateSlot(dir, slot.addr); err != nil {
		slot.release()
		return err
	}
	keepSlot := false
	defer func() {
		if keepSlot {
			log.Error("template VM not known gone: its slot kept until a restart", "slot", slot.n)
			return
		}
		if err := os.Remove(filepath.Join(dir, templateSlotFile)); err != nil {
			log.Error("remove the template's slot record", "err", err)
		}
		slot.release()
	}()
	spec := vmm.Spec{
		ID: id, Dir: dir, Kernel: pc.VM.Kernel, Initramfs: initrd, Cmdline: pc.VM.Cmdline,
		VCPUs: pc.VM.VCPUs, MemoryMiB: pc.VM.MemoryMiB, TAP: tap, MAC: netplan.NewMAC(), Slot: slot.n,
		ConsoleLog: filepath.Join(dir, templateConsole), ConsoleMaxBytes: m.consoleMaxBytes(),
		Identity: filepath.Join(dir, "identity.sock"),
		// A driver that keeps guest RAM in a file (QEMU) keeps the
		// template's here, its restores map it; Seal counts it in.
		MemoryFile: filepath.Join(dir, warmstart.MemoryFile),
	}
	if root != nil {
		root.Apply(&spec, &agentproto.Config{}) // the drives; the config stays the bare template's
	}
	machine, err := m.d.Hypervisor.Start(ctx, spec)
	if err != nil && machine == nil {
		return fmt.Errorf("start the template VM: %w", err)
	}
	// From here the monitor is killed on the way out, also one returned
	// with Start's error, which the driver could not kill (see
	// vmm.Hypervisor): the slot is kept while it may still run.
	defer func() {
		kctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if kerr := machine.Kill(kctx); kerr != nil {
			// A monitor that may still run may still write the memory
			// file it maps shared: what it saved is not published.
			log.Error("kill the template VM", "err", kerr)
			keepSlot = true
			err = errors.Join(err, fmt.Errorf("the template VM is not known gone, its build not published: %w", kerr))
		}
		for _, d := range spec.Drives {
			if !d.ReadOnly && filepath.Dir(d.Path) == dir {
				_ = os.Remove(d.Path) // the template's unused writable disk
			}
		}
	}()
	if err != nil {
		return fmt.Errorf("start the template VM: %w", err)
	}
	w, ok := machine.(vmm.Warm)
	if !ok {
		return fmt.Errorf("the %s driver cannot save VMs", m.d.Hypervisor.Name())
	}
	if err := waitConsole(ctx, machine, spec.ConsoleLog, TemplateWaiting); err != nil {
		return fmt.Errorf("template VM: %w", err)
	}
	if err := w.SaveState(ctx, filepath.Join(dir, warmstart.StateFile)); err != nil {
		return fmt.Errorf("save the template VM: %w", err)
	}
	return nil
}

// buildSlot is a template build's slot: n is vmm.Spec.Slot (the
// Firecracker jailer's uid and gid are its range's start plus it), addr
// the address of the VMs' network it stands for, which its record holds.
type buildSlot struct {
	n       int
	addr    netip.Addr
	release func()
}

// templateSlot takes a slot for template VM id from the allocator the
// VMs' slots come from (an address of the VMs' network, which the
// template never uses: it has none), so no live VM or other template
// build runs as its user; release gives it back once the VM is gone.
func (m *Manager) templateSlot(id string) (buildSlot, error) {
	addr, err := m.d.Alloc.Allocate(id)
	if err != nil {
		return buildSlot{}, fmt.Errorf("template slot: %w", err)
	}
	release := func() { m.d.Alloc.Release(addr, id) }
	n, err := netplan.Offset(netip.MustParsePrefix(m.d.Config.Network.CIDR), addr)
	if err != nil {
		release()
		return buildSlot{}, fmt.Errorf("template slot: %w", err)
	}
	return buildSlot{n: n, addr: addr, release: release}, nil
}

// waitConsole waits until the console file holds want.
func waitConsole(ctx context.Context, machine vmm.Machine, path, want string) error {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		if b, err := readTail(path, 64<<10); err == nil && strings.Contains(string(b), want) {
			return nil
		}
		select {
		case <-machine.Done():
			return fmt.Errorf("ended (%v) before its agent waited for its identity", machine.Err())
		case <-ctx.Done():
			return fmt.Errorf("its agent did not wait for its identity: %w", ctx.Err())
		case <-t.C:
		}
	}
}

// readTail is the last n bytes of path.
func readTail(path string, n int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	off := max(st.Size()-n, 0)
	b := make([]byte, st.Size()-off)
	k, err := f.ReadAt(b, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return b[:k], nil
}

// reapTemplate ends a template VM a crashed run left running.
func (m *Manager) reapTemplate(ctx context.Context, id string, log *slog.Logger) {
	f, ok := m.d.Hypervisor.(vmm.Finder)
	r, ok2 := m.d.Hypervisor.(vmm.Reaper)
	if !ok || !ok2 {
		return
	}
	pid, err := f.FindMonitor(id)
	if err != nil || pid == 0 {
		return
	}
	log.Warn("warm start: ending a template VM a previous run left", "pid", pid)
	if err := r.Reap(ctx, id, pid); err != nil {
		log.Error("warm start: end a previous run's template VM", "pid", pid, "err", err)
	}
}

// removeStaleTemplates removes what TemplateDir holds for no warm-start
// pool of pools (a pool removed or turned cold while the daemon was
// down) and, in each warm-start pool's directory, every build but the
// published one: no restore runs yet, so those are a crash's leftovers
// (a build never published, one a publish replaced, files of the
// layout before builds had their own directories). It returns the names
// of the pool directories it removed, or tried to: Recover's
// reapTemplates, which runs after it, looks for their template monitors.
func (m *Manager) removeStaleTemplates(pools []config.Pool) (removed []string) {
	if m.d.TemplateDir == "" {
		return nil
	}
	entries, err := os.ReadDir(m.d.TemplateDir)
	if err != nil {
		return nil // none yet
	}
	warm := map[string]bool{}
	for _, pc := range pools {
		warm[pc.Name] = pc.WarmStart
	}
	for _, e := range entries {
		path := filepath.Join(m.d.TemplateDir, e.Name())
		if warm[e.Name()] {
			removed, err := warmstart.Prune(path, holdsTemplateSlot)
			for _, p := range removed {
				m.log.Info("warm start: removed a template build a previous run left", "pool", e.Name(), "path", p)
			}
			if err != nil {
				m.log.Error("warm start: remove template builds a previous run left", "pool", e.Name(), "err", err)
			}
			continue
		}
		if e.IsDir() {
			removed = append(removed, e.Name())
			// Recover holds the slot of a template monitor it cannot
			// end, and drops the record of one it ends: the next
			// start removes the directory.
			if slots, _ := m.recordedTemplateSlots(path); len(slots) > 0 {
				m.log.Warn("warm start: a template no pool uses kept: its VM may still run", "path", path)
				continue
			}
		}
		if err := os.RemoveAll(path); err != nil {
			m.log.Error("warm start: remove a template no pool uses", "path", path, "err", err)
			continue
		}
		m.log.Info("warm start: removed a template no pool uses", "path", path)
	}
	return removed
}
