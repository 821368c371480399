package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/nixos-fireactions/nixos-fireactions/guestroot"
)

func guestRootCmd() *cobra.Command {
	var runner, runnerPath, out, busybox, bash string
	cmd := &cobra.Command{
		Use:   "guest-root",
		Short: "Build a minimal guest root archive (busybox, bash, a runner agent) for vm.root_initramfs",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if runner == "" || out == "" {
				return fmt.Errorf("--runner and --out are required")
			}
			s := guestroot.DefaultSpec(runner, runnerPath)
			s.Busybox, s.Bash = busybox, bash
			if err := guestroot.Build(cmd.Context(), s, out); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), out)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&runner, "runner", "", "runner agent binary on the host (static)")
	f.StringVar(&runnerPath, "runner-path", "/bin/act_runner", "where the runner goes in the guest")
	f.StringVarP(&out, "out", "o", "", "archive to write")
	f.StringVar(&busybox, "busybox", "/bin/busybox", "static busybox")
	f.StringVar(&bash, "bash", "/bin/bash-static", "static bash (empty: none)")
	return cmd
}
