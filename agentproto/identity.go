package agentproto

import "time"

// IdentityPort is the name of the virtio-serial port a warm-started VM's
// agent waits on for its Identity (/sys/class/virtio-ports/*/name): the
// one channel that exists after a restore and carries nothing baked into
// the template.
const IdentityPort = "fireactions.identity"

// IdentityChannelParam on the kernel command line, as
// IdentityChannelParam=IdentityChannelVsock, tells the agent of a
// template its identity comes over AF_VSOCK port IdentityVsockPort
// (Firecracker has no virtio-serial); without it, over IdentityPort.
const (
	IdentityChannelParam = "fireactions.identity"
	IdentityChannelVsock = "vsock"
	IdentityVsockPort    = 1024
)

// IdentityAck is the guest's answer, one line, once it has read,
// checked and applied its Identity (RNG reseeded, clock and MAC set, the
// config accepted): the restore is the VM's own from then on.
// IdentityRefused is its answer to an Identity it could not apply; the
// host takes any answer but IdentityAck (or none) for a failed restore
// and boots the VM cold, while the guest powers off.
const (
	IdentityAck     = "identity-ok"
	IdentityRefused = "identity-refused"
)

// MaxIdentity bounds one Identity line, as the guest reads it.
const MaxIdentity = 1 << 20

// Identity is what the host hands a VM restored from a template, as one
// JSON line on IdentityPort: everything the template must not share.
type Identity struct {
	// Config is the VM's own config (address, MAC, hostname, runner
	// credential, registry settings), as a cold boot reads it from its
	// initramfs.
	Config Config `json:"config"`
	// MAC is the address the agent sets on the interface: the template's
	// is the template's.
	MAC string `json:"mac"`
	// Seed is fresh host randomness the agent credits to the kernel's
	// pool and reseeds the CRNG with before anything reads it.
	Seed []byte `json:"seed"`
	// Now is the host's clock as it sent the line; the guest's is the
	// template's, stopped when it was saved.
	Now time.Time `json:"now"`
}
