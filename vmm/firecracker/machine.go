package firecracker

import (
	"log/slog"
	"os/exec"

	"github.com/nixos-fireactions/nixos-fireactions/vmm/monitor"
)

// newMachine follows a Firecracker this driver started; the jail and
// what else the VM held on the host go once the process is gone.
func newMachine(cmd *exec.Cmd, cleanup func() error, log *slog.Logger) *monitor.Process {
	return monitor.Watch(cmd, "firecracker", func() {
		if err := cleanup(); err != nil {
			log.Error("remove the vm's jail", "err", err)
		}
	})
}
