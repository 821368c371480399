package pool

import (
	"context"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
	"github.com/nixos-fireactions/nixos-fireactions/config"
	"github.com/nixos-fireactions/nixos-fireactions/forge"
	"github.com/nixos-fireactions/nixos-fireactions/vmm"
)

// Roots prepares the root file systems of VMs whose pool boots an OCI
// image instead of its initramfs (see package vmroot).
type Roots interface {
	// PrepareVM makes the VM's root disks in its directory dir; ok is
	// false for a pool whose root is its initramfs.
	PrepareVM(ctx context.Context, pool, dir string) (root VMRoot, ok bool, err error)
	// AdoptVM takes back the root of a VM a previous run left running in
	// dir, booting the image with manifest digest: a lease on that image
	// (whatever the pool's image is now), so that no eviction removes it
	// while the VM lives. It creates nothing; an error says the VM goes on
	// without a lease (its image is no longer in the store, say).
	AdoptVM(ctx context.Context, pool, dir, digest string) (VMRoot, error)
	// Reload applies the pools of a new configuration before any VM of
	// theirs starts: a pool that is new or whose image changed gets its
	// image (pulled if need be), a pool removed or without an image any
	// more lets go of its own; VMs keep the roots they have. An error
	// changes nothing.
	Reload(ctx context.Context, pools []config.Pool) error
}

// VMRoot is one VM's root, prepared before its runner is registered.
type VMRoot interface {
	// Guest sets the runner's user to the image's, before registration.
	Guest(g *forge.GuestOptions)
	// Apply attaches the disks to the VM and describes them, and the
	// image's environment, to the agent.
	Apply(spec *vmm.Spec, cfg *agentproto.Config)
	// Digest is the manifest digest of the image the VM boots, kept in
	// its record for AdoptVM.
	Digest() string
	// Release gives the image back when the VM is gone.
	Release()
}
