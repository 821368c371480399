package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/nixos-fireactions/nixos-fireactions/guestroot"
)

// guestRootCmd is `fireactions guest-root`: a root archive with busybox,
// bash and one runner, either a host file copied in (--runner) or a
// symlink into store paths copied whole (--runner-link with --closure, as
// nix/packages/guest-root.nix runs it).
func guestRootCmd() *cobra.Command {
	var runner, runnerLink, runnerPath, out, busybox, bash string
	var closures []string
	cmd := &cobra.Command{
		Use:   "guest-root",
		Short: "Build a minimal guest root archive (busybox, bash, a runner agent) for vm.root_initramfs",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" || (runner == "") == (runnerLink == "") {
				return fmt.Errorf("--out and exactly one of --runner and --runner-link are required")
			}
			if runnerLink != "" && len(closures) == 0 {
				return fmt.Errorf("--runner-link %s needs the --closure that holds it", runnerLink)
			}
			s := guestroot.Spec{Busybox: busybox, Bash: bash}
			if runner != "" {
				s.Files = map[string]string{runnerPath: runner}
			} else {
				s.Links = map[string]string{runnerPath: runnerLink}
			}
			for _, file := range closures {
				paths, err := guestroot.ReadClosure(file)
				if err != nil {
					return err
				}
				s.Closure = append(s.Closure, paths...)
			}
			if err := guestroot.Build(cmd.Context(), s, out); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), out)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&runner, "runner", "", "runner agent binary on the host (static), copied to --runner-path")
	f.StringVar(&runnerLink, "runner-link", "", "absolute path of the runner inside a --closure; --runner-path becomes a symlink to it")
	f.StringVar(&runnerPath, "runner-path", "/bin/act_runner", "where the runner goes in the guest")
	f.StringArrayVar(&closures, "closure", nil, "file of store paths (closureInfo's store-paths) copied whole under the same paths; repeatable")
	f.StringVarP(&out, "out", "o", "", "archive to write")
	f.StringVar(&busybox, "busybox", "/bin/busybox", "static busybox")
	f.StringVar(&bash, "bash", "/bin/bash-static", "static bash (empty: none)")
	return cmd
}
