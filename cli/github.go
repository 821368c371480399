package cli

import (
	"fmt"
	"net/url"

	"github.com/spf13/cobra"
)

// githubCmd is `fireactions github`: GitHub-only operations of a running
// daemon.
func githubCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "github", Short: "GitHub-only operations of the running daemon"}
	cmd.AddCommand(deleteScaleSetCmd())
	return cmd
}

// deleteScaleSetCmd is `fireactions github delete-scaleset POOL`.
func deleteScaleSetCmd() *cobra.Command {
	o := &clientOpts{}
	cmd := &cobra.Command{
		Use:   "delete-scaleset POOL",
		Short: "Delete the pool's runner scale set at GitHub (a restart keeps it); the pool takes no scale-set demand until the next restart or reload",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client(cmd)
			if err != nil {
				return err
			}
			if _, err := c.call(cmd.Context(), "DELETE", "/api/v1/pools/"+url.PathEscape(args[0])+"/demand-source", nil); err != nil {
				return err
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "%s: scale set deleted\n", args[0])
			return err
		},
	}
	addClientFlags(cmd, o, false, true)
	return cmd
}
