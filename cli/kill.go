package cli

import (
	"fmt"
	"net/url"

	"github.com/spf13/cobra"

	"github.com/nixos-fireactions/nixos-fireactions/api"
)

// killCmd is `fireactions kill VM`.
func killCmd() *cobra.Command {
	o := &clientOpts{}
	cmd := &cobra.Command{
		Use:   "kill VM",
		Short: "End a VM now, whatever it is doing; its runner is removed",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client(cmd)
			if err != nil {
				return err
			}
			raw, err := c.call(cmd.Context(), "DELETE", "/api/v1/vms/"+url.PathEscape(args[0]), nil)
			if err != nil {
				return err
			}
			if o.output == "json" {
				return printJSON(cmd.OutOrStdout(), raw)
			}
			var k api.KillResponse
			if err := decodeAnswer(raw, &k); err != nil {
				return err
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "%s: %s\n", k.ID, k.Status)
			return err
		},
	}
	addClientFlags(cmd, o, false, true)
	return cmd
}
