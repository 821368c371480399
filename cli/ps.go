package cli

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/nixos-fireactions/nixos-fireactions/api"
)

// psCmd is `fireactions ps`: the VMs of a running orchestrator.
func psCmd() *cobra.Command {
	o := &clientOpts{}
	cmd := &cobra.Command{
		Use:   "ps",
		Short: "List the VMs of a running orchestrator, oldest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := o.client(cmd)
			if err != nil {
				return err
			}
			raw, err := c.call(cmd.Context(), "GET", "/api/v1/vms", nil)
			if err != nil {
				return err
			}
			if o.output == "json" {
				return printJSON(cmd.OutOrStdout(), raw)
			}
			var vms []api.VMSummary
			if err := decodeAnswer(raw, &vms); err != nil {
				return err
			}
			return printVMs(cmd.OutOrStdout(), vms)
		},
	}
	addClientFlags(cmd, o, false, true)
	return cmd
}

func printVMs(w io.Writer, vms []api.VMSummary) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tPOOL\tPHASE\tRUNNER\tADDRESS\tAGE")
	for _, v := range vms {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", v.ID, dash(v.Pool), dash(string(v.Phase)),
			dash(v.RunnerName), dash(v.Address), formatAge(time.Duration(v.AgeSeconds)*time.Second))
	}
	return tw.Flush()
}

// formatAge is a short age: 45s, 3m12s, 2h5m, 3d4h.
func formatAge(d time.Duration) string {
	s := int64(d / time.Second)
	switch {
	case s < 0:
		return "0s"
	case s < 60:
		return fmt.Sprintf("%ds", s)
	case s < 3600:
		return fmt.Sprintf("%dm%ds", s/60, s%60)
	case s < 86400:
		return fmt.Sprintf("%dh%dm", s/3600, s%3600/60)
	default:
		return fmt.Sprintf("%dd%dh", s/86400, s%86400/3600)
	}
}
