package cli

import (
	"errors"
	"net/url"
	"strconv"

	"github.com/spf13/cobra"
)

// logsCmd is `fireactions logs VM`: a VM's serial console.
func logsCmd() *cobra.Command {
	o := &clientOpts{}
	var follow bool
	var tail int
	cmd := &cobra.Command{
		Use:   "logs VM [-f] [--tail N]",
		Short: "Print a VM's serial console log (a live VM's, or a failed VM's kept log)",
		Long: "Print a VM's serial console log. With -f, keep printing what the VM\n" +
			"writes until it ends.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if cmd.Flags().Changed("tail") && tail < 0 {
				return errors.New("--tail: want a number of lines >= 0")
			}
			c, err := o.client(cmd)
			if err != nil {
				return err
			}
			q := url.Values{}
			if tail >= 0 {
				q.Set("tail", strconv.Itoa(tail))
			}
			if follow {
				q.Set("follow", "1")
			}
			path := "/api/v1/vms/" + url.PathEscape(args[0]) + "/console"
			if len(q) > 0 {
				path += "?" + q.Encode()
			}
			return c.stream(cmd.Context(), path, cmd.OutOrStdout())
		},
	}
	addClientFlags(cmd, o, false, false)
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new output until the VM ends")
	cmd.Flags().IntVar(&tail, "tail", -1, "print only the last N lines (-1: all)")
	return cmd
}
