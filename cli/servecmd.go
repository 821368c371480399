package cli

import (
	"github.com/spf13/cobra"

	"github.com/nixos-fireactions/nixos-fireactions/config"
	"github.com/nixos-fireactions/nixos-fireactions/daemon"
)

// serveCmd is `fireactions serve`: the daemon, run until a signal.
func serveCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "serve CONFIG",
		Short: "Run the pools until SIGTERM or SIGINT, then drain",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := config.Load(args[0])
			if err != nil {
				return err
			}
			return daemon.Run(cmd.Context(), cfg, daemon.Options{
				ConfigPath: args[0], Version: Version, Logs: cmd.ErrOrStderr(),
			})
		},
	}
}
