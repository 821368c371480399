package qemu

import (
	"fmt"

	"github.com/nixos-fireactions/nixos-fireactions/vmm"
	"github.com/nixos-fireactions/nixos-fireactions/vmm/adopted"
)

var _ vmm.Adopter = (*Driver)(nil)

// Adopt implements vmm.Adopter: the monitor is not our child, so its exit
// is watched through a pidfd, which also makes signals race-free.
func (d *Driver) Adopt(id string, pid int) (vmm.Machine, error) {
	m, err := adopted.Watch(pid, func() bool { return IsOurs(pid, id) }, nil)
	if err != nil {
		return nil, fmt.Errorf("qemu: adopt vm %s: %w", id, err)
	}
	return m, nil
}
