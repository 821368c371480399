// Package cli is the fireactions command line: one cobra tree shared by
// the binary's faces (fireactions, fireteact, fireglab), its flags and
// the API client. The orchestrator that `serve` runs is the daemon
// package; cli picks no driver itself.
package cli

import (
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/nixos-fireactions/nixos-fireactions/config"
)

// Version is set at build time with -ldflags "-X .../cli.Version=...".
var Version = "dev"

// Root is the whole command tree.
func Root() *cobra.Command {
	root := &cobra.Command{
		Use:           "fireactions",
		Short:         "Self-hosted CI runners, one ephemeral microVM per job",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(serveCmd(), validateCmd(), versionCmd(), guestRootCmd(), poolsCmd(), psCmd(), logsCmd(), killCmd(), doctorCmd(), imageCmd(), githubCmd(), fleetCmd())
	return applyFace(root, faceOf(os.Args[0]))
}

// Main runs the command line and returns the process exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	root := Root()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	if err := root.Execute(); err != nil {
		fmt.Fprintln(stderr, "fireactions:", err)
		return 1
	}
	return 0
}

func versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintln(cmd.OutOrStdout(), "fireactions", Version)
		},
	}
}

func validateCmd() *cobra.Command {
	var offline bool
	cmd := &cobra.Command{
		Use:   "validate CONFIG",
		Short: "Check a configuration file; exit non-zero with one line per problem",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			load := config.Load
			if offline {
				load = config.LoadOffline
			}
			if _, err := load(args[0]); err != nil {
				fmt.Fprintln(cmd.ErrOrStderr(), err)
				return fmt.Errorf("%s: invalid", args[0])
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: ok\n", args[0])
			return nil
		},
	}
	cmd.Flags().BoolVar(&offline, "offline", false,
		"check a file meant for another machine: files and secrets it names are not opened, token_env not looked up")
	return cmd
}
