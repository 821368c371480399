// Package vmroot gives each VM of an image pool its root file system: the
// pool's flattened OCI image, shared read-only by all its VMs, plus a
// writable disk of its own that the guest agent puts under an overlay.
// A VM's share costs the same whatever the image's size: a lease on the
// image and a clone of a formatted sparse disk.
//
// It also keeps each pool's image current: pulled at start under the
// pool's pull policy, checked for the runner agent before any VM boots,
// and, for pull policy Always, resolved again periodically so a moved tag
// reaches the VMs that start after it. A reload (Reload) pulls the image
// of a pool that is new or whose image changed before its VMs start, and
// lets go of the images no pool uses any more; running VMs keep theirs.
package vmroot

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"reflect"
	"sync"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
	"github.com/nixos-fireactions/nixos-fireactions/config"
	"github.com/nixos-fireactions/nixos-fireactions/forge"
	"github.com/nixos-fireactions/nixos-fireactions/imagestore"
	"github.com/nixos-fireactions/nixos-fireactions/vmm"
)

// Drive IDs, given to the guest as the disks' serials.
const (
	imageDrive    = "fa-image"
	writableDrive = "fa-writable"
	writableFile  = "writable.img"
)

// Pools are the image roots of a host's pools.
type Pools struct {
	store *imagestore.Store
	disks *Disks
	log   *slog.Logger

	mu    sync.Mutex
	pools map[string]*poolRoot
	order []*poolRoot // the pools in configuration order, for Load
}

// poolRoot is one pool's current image.
type poolRoot struct {
	cfg    config.Pool
	policy imagestore.PullPolicy
	// Guarded by Pools.mu: the pool holds a lease on its current image,
	// so it is never evicted while VMs may still start from it.
	lease *imagestore.Lease
	user  runnerUser
	// netfilter (guarded by Pools.mu) is the image's iptables back end
	// when the pool runs Docker (see CheckDocker).
	netfilter string
	// retired (guarded by Pools.mu) is set when a reload replaced or
	// removed the pool: a refresh still under way gives its pull back.
	retired bool
}

// New sets up the image roots of the pools that boot an image, checking
// their pull policies; it pulls nothing (see Load). Until Load, PrepareVM
// fails, while AdoptVM already works: a restart takes back the images of
// the VMs it adopts before a pull can evict them.
func New(store *imagestore.Store, disks *Disks, pools []config.Pool, log *slog.Logger) (*Pools, error) {
	ps := &Pools{store: store, disks: disks, log: log, pools: map[string]*poolRoot{}}
	for _, p := range pools {
		if p.VM.Image == "" {
			continue
		}
		policy, err := imagestore.ParsePullPolicy(p.VM.PullPolicy)
		if err != nil {
			return nil, fmt.Errorf("pool %q: %w", p.Name, err)
		}
		pr := &poolRoot{cfg: p, policy: policy}
		ps.pools[p.Name] = pr
		ps.order = append(ps.order, pr)
	}
	return ps, nil
}

// Load pulls the image of every pool that has one, under its pull policy,
// checks it can run the pool's runner and makes the pool's writable disk
// template. It fails when an image cannot be had or lacks the runner
// agent: better at start than at every boot; Close still releases what
// it leased. A pull may evict least recently used images no one leases
// past the store's size cap.
func (ps *Pools) Load(ctx context.Context) error {
	for _, pr := range ps.order {
		if err := ps.load(ctx, pr, pr.policy); err != nil {
			return err
		}
		if _, err := ps.disks.Template(ctx, pr.cfg.VM.DiskMiB); err != nil {
			return fmt.Errorf("pool %q: %w", pr.cfg.Name, err)
		}
	}
	return nil
}

// load pulls the pool's image and makes it the pool's current one.
func (ps *Pools) load(ctx context.Context, pr *poolRoot, policy imagestore.PullPolicy) error {
	p := pr.cfg
	start := time.Now()
	im, err := ps.store.Pull(ctx, p.VM.Image, policy, nil)
	if err != nil {
		return fmt.Errorf("pool %q: %w", p.Name, err)
	}
	if err := CheckRunner(im, p.Runner.Path); err != nil {
		return fmt.Errorf("pool %q: %w", p.Name, err)
	}
	var netfilter string
	if p.Cache.Docker {
		if netfilter, err = CheckDocker(im); err != nil {
			return fmt.Errorf("pool %q: %w", p.Name, err)
		}
	}
	user, err := resolveUser(im, p.Runner)
	if err != nil {
		return fmt.Errorf("pool %q: image %s: %w", p.Name, p.VM.Image, err)
	}
	lease, err := ps.store.Acquire(ctx, im.Digest)
	if err != nil {
		return fmt.Errorf("pool %q: %w", p.Name, err)
	}
	ps.mu.Lock()
	if pr.retired {
		ps.mu.Unlock()
		lease.Release()
		return nil
	}
	old := pr.lease
	if old != nil && old.Digest == im.Digest {
		ps.mu.Unlock()
		lease.Release()
		return nil
	}
	pr.lease, pr.user, pr.netfilter = lease, user, netfilter
	ps.mu.Unlock()
	old.Release()
	ps.log.Info("pool image ready", "pool", p.Name, "image", p.VM.Image, "digest", im.Digest,
		"fs", im.FSType, "netfilter", netfilter, "runner_user", user.name, "uid", user.uid, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// CheckRunner looks into the flattened image, through its symlinks, for
// the runner agent at path: a clear error before any VM boots, rather
// than a guest that powers off.
func CheckRunner(im *imagestore.Image, path string) error {
	ix, err := im.ReadIndex()
	if err != nil {
		return err
	}
	if err := ix.Executable(path); err != nil {
		return fmt.Errorf("image %s (%s) cannot run the runner agent: %w; build it into the image or set runner.path", im.Ref, im.Digest, err)
	}
	return nil
}

// Refresh resolves the tags of pools with pull policy Always again every
// interval until ctx ends. A pool whose image cannot be refreshed keeps
// the one it has.
func (ps *Pools) Refresh(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, pr := range ps.current() {
			if pr.policy != imagestore.PullAlways {
				continue
			}
			if err := ps.load(ctx, pr, imagestore.PullAlways); err != nil && ctx.Err() == nil {
				ps.log.Warn("pool image not refreshed; keeping the current one", "pool", pr.cfg.Name, "err", err)
			}
		}
	}
}

// current is a snapshot of the pools' roots.
func (ps *Pools) current() []*poolRoot {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	return append([]*poolRoot(nil), ps.order...)
}

// Reload applies the pools of a new configuration. A pool that is new, or
// whose image, pull policy, disk size, runner or cache.docker changed,
// gets a new root:
// its image pulled under its pull policy, checked for the runner agent,
// and its writable disk template made, all before Reload returns, so the
// VMs that start after it boot the new image. A pool whose root did not
// change keeps it as it is, without a pull. The roots of pools that were
// removed, replaced or no longer boot an image are released; VMs running
// from them keep their own leases (see PrepareVM) until they are gone.
// An error changes nothing: the running roots stay and what was pulled
// for the reload is released.
func (ps *Pools) Reload(ctx context.Context, pools []config.Pool) error {
	ps.mu.Lock()
	old := ps.pools
	ps.mu.Unlock()
	next := map[string]*poolRoot{}
	var order, fresh []*poolRoot
	abandon := func() {
		for _, pr := range fresh {
			pr.lease.Release()
		}
	}
	for _, p := range pools {
		if p.VM.Image == "" {
			continue
		}
		if op := old[p.Name]; op != nil && sameRoot(op.cfg, p) {
			next[p.Name] = op
			order = append(order, op)
			continue
		}
		policy, err := imagestore.ParsePullPolicy(p.VM.PullPolicy)
		if err != nil {
			abandon()
			return fmt.Errorf("pool %q: %w", p.Name, err)
		}
		pr := &poolRoot{cfg: p, policy: policy}
		if err := ps.load(ctx, pr, policy); err != nil {
			pr.lease.Release()
			abandon()
			return err
		}
		fresh = append(fresh, pr)
		if _, err := ps.disks.Template(ctx, p.VM.DiskMiB); err != nil {
			abandon()
			return fmt.Errorf("pool %q: %w", p.Name, err)
		}
		next[p.Name] = pr
		order = append(order, pr)
	}
	ps.mu.Lock()
	var released []*imagestore.Lease
	for name, op := range old {
		if next[name] != op {
			op.retired = true
			released = append(released, op.lease)
			op.lease = nil
		}
	}
	ps.pools, ps.order = next, order
	ps.mu.Unlock()
	for _, l := range released {
		l.Release()
	}
	for _, pr := range fresh {
		ps.log.Info("pool image root replaced by a reload", "pool", pr.cfg.Name, "image", pr.cfg.VM.Image, "digest", pr.lease.Digest)
	}
	return nil
}

// sameRoot reports whether two settings of one pool give its VMs the same
// root: the same image under the same pull policy, disk size and runner,
// and Docker asked or not (a pool that starts asking has its image
// checked for dockerd and iptables, and its back end read).
func sameRoot(a, b config.Pool) bool {
	return a.VM.Image == b.VM.Image && a.VM.PullPolicy == b.VM.PullPolicy &&
		a.VM.DiskMiB == b.VM.DiskMiB && reflect.DeepEqual(a.Runner, b.Runner) &&
		a.Cache.Docker == b.Cache.Docker
}

// Close releases the pools' images.
func (ps *Pools) Close() {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	for _, pr := range ps.pools {
		pr.lease.Release()
	}
}

// PrepareVM makes the root of a VM of pool in its directory dir: a lease
// on the pool's current image and a fresh writable disk. ok is false for
// a pool without an image.
func (ps *Pools) PrepareVM(ctx context.Context, pool, dir string) (vm *VM, ok bool, err error) {
	ps.mu.Lock()
	pr, ok := ps.pools[pool]
	var current *imagestore.Lease
	var user runnerUser
	var netfilter string
	if ok {
		current, user, netfilter = pr.lease, pr.user, pr.netfilter
	}
	ps.mu.Unlock()
	if !ok {
		return nil, false, nil
	}
	if current == nil {
		return nil, true, fmt.Errorf("pool %q: image not loaded yet", pool)
	}
	digest := current.Digest
	lease, err := ps.store.Acquire(ctx, digest)
	if err != nil {
		return nil, true, fmt.Errorf("pool %q: image %s: %w", pool, digest, err)
	}
	disk := filepath.Join(dir, writableFile)
	if err := ps.disks.Create(ctx, pr.cfg.VM.DiskMiB, disk); err != nil {
		lease.Release()
		return nil, true, fmt.Errorf("pool %q: %w", pool, err)
	}
	return &VM{lease: lease, user: user, disk: disk, netfilter: netfilter}, true, nil
}

// VM is one VM's root: its lease on the image and its writable disk (in
// the VM's directory, removed with it).
type VM struct {
	lease     *imagestore.Lease
	user      runnerUser
	disk      string
	netfilter string // the image's iptables back end, for Docker's modules
}

// Guest sets the runner's user to the image's (see resolveUser).
func (v *VM) Guest(g *forge.GuestOptions) {
	g.User, g.UID, g.GID = v.user.name, v.user.uid, v.user.gid
}

// Apply attaches the disks to the VM and tells the agent about them, and
// gives the runner the image's environment and working directory (the
// forge's own variables win over the image's).
func (v *VM) Apply(spec *vmm.Spec, cfg *agentproto.Config) {
	im := v.lease.Image
	spec.Drives = append(spec.Drives,
		vmm.Drive{ID: imageDrive, Path: im.Path(), ReadOnly: true},
		vmm.Drive{ID: writableDrive, Path: v.disk},
	)
	cfg.Root = &agentproto.Root{
		Name:      im.Ref,
		FSType:    im.FSType,
		Image:     agentproto.Disk{Serial: imageDrive, Device: "/dev/vda"},
		Writable:  agentproto.Disk{Serial: writableDrive, Device: "/dev/vdb"},
		Netfilter: v.netfilter,
	}
	cfg.Runner.Env = append(append([]string(nil), im.Config.Env...), cfg.Runner.Env...)
	if wd := im.Config.WorkingDir; wd != "" && wd != "/" {
		cfg.Runner.WorkDir = wd
	}
}

// AdoptVM takes back the root of a VM a previous run of pool left running
// in its directory dir, booting the image with the manifest digest: a
// lease on that image, whatever the pool's image is now, and the writable
// disk the VM already has in dir. It creates nothing. An image no longer
// in the store is an error wrapping imagestore.ErrNotPresent.
//
// The runner's user is not resolved: an adopted VM's runner is registered
// already, so its root's Guest is never called.
func (ps *Pools) AdoptVM(ctx context.Context, pool, dir, digest string) (*VM, error) {
	lease, err := ps.store.Acquire(ctx, digest)
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", digest, err)
	}
	return &VM{lease: lease, disk: filepath.Join(dir, writableFile)}, nil
}

// Digest is the image the VM boots.
func (v *VM) Digest() string { return v.lease.Digest }

// Release gives the image back; the writable disk goes with the VM's
// directory.
func (v *VM) Release() { v.lease.Release() }
