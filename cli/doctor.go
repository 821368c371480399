package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/nixos-fireactions/nixos-fireactions/config"
	"github.com/nixos-fireactions/nixos-fireactions/doctor"
)

func doctorCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "doctor [CONFIG]",
		Short: "Check this host can run the configured pools; exit 1 when one cannot",
		Long: `doctor checks the host a configuration will run on, one line per check:
KVM (a real test vCPU, since a paravirtual-only or broken KVM opens fine
and then hangs stock guests), the VMM binaries and their versions, the
kernel format each pool boots (an ELF vmlinux for Firecracker, a bzImage
for QEMU), the drivers each pool's kernel must have for its guests
(virtio_mmio, virtio_net; for image pools virtio_blk, ext4, overlay and
erofs), built in or in the pool's kernel_modules, as the kernel's embedded
configuration, a config-<version> beside it or in /boot, or its module
tree's modules.builtin says (nothing is booted; a kernel none of these
describe is a warning), nftables, netlink and the bridge, cgroup v2 controllers for
the jailer, the state directory, and disk and memory for every pool at
its max. Problems come with what to do. Warnings (such as QEMU falling
back to TCG) leave the exit status 0; a failure, when a pool cannot run,
makes it 1. Without CONFIG the defaults are checked (QEMU, no pools).`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg := config.Defaults()
			if len(args) == 1 {
				loaded, err := config.Load(args[0])
				if err != nil {
					fmt.Fprintln(cmd.ErrOrStderr(), err)
					return fmt.Errorf("%s: invalid", args[0])
				}
				cfg = *loaded
			}
			r := doctor.Run(cmd.Context(), &cfg, doctor.System{})
			r.Write(cmd.OutOrStdout())
			if r.Failed() {
				return fmt.Errorf("doctor: the host cannot run: %v", r.Blocked())
			}
			return nil
		},
	}
}
