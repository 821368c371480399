package vmm

// Drive is a virtio block device of a VM: an image file on the host. An
// OCI image root is two of them: the pool's shared file system image,
// read-only, and the VM's own writable disk.
type Drive struct {
	// ID names the drive: letters, digits, '-' and '_'. QEMU gives it to
	// the guest as the disk's serial (at most 20 bytes), which is how the
	// guest agent tells the disks apart; Firecracker makes a serial of its
	// own from the backing file, which its driver names to the guest on
	// the kernel command line by this ID (agentproto.SerialParam).
	ID       string
	Path     string
	ReadOnly bool
}
