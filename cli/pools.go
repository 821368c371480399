package cli

import (
	"errors"
	"fmt"
	"io"
	"net/url"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/nixos-fireactions/nixos-fireactions/pool"
	"github.com/nixos-fireactions/nixos-fireactions/vmstate"
)

// poolsCmd is `fireactions pools ls|scale|pause|resume`, against the API
// of a running `fireactions serve`.
func poolsCmd() *cobra.Command {
	o := &clientOpts{}
	cmd := &cobra.Command{
		Use:   "pools",
		Short: "List, scale, pause and resume the pools of a running orchestrator",
		Args:  cobra.NoArgs,
	}
	addClientFlags(cmd, o, true, true)

	ls := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List the pools with their VMs and queued jobs",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := o.client(cmd)
			if err != nil {
				return err
			}
			raw, err := c.call(cmd.Context(), "GET", "/api/v1/pools", nil)
			if err != nil {
				return err
			}
			if o.output == "json" {
				return printJSON(cmd.OutOrStdout(), raw)
			}
			var pools []pool.PoolStatus
			if err := decodeAnswer(raw, &pools); err != nil {
				return err
			}
			return printPools(cmd.OutOrStdout(), pools)
		},
	}

	var minIdle, max int
	scale := &cobra.Command{
		Use:   "scale POOL [--min-idle N] [--max N]",
		Short: "Change a pool's min_idle and/or max until the next restart",
		Long: "Change a pool's min_idle and/or max at run time. Lowering them never stops\n" +
			"a busy VM: surplus idle VMs go after the idle timeout, busy ones when\n" +
			"their job ends. The configuration file is not changed.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var body struct {
				MinIdle *int `json:"min_idle,omitempty"`
				Max     *int `json:"max,omitempty"`
			}
			if cmd.Flags().Changed("min-idle") {
				body.MinIdle = &minIdle
			}
			if cmd.Flags().Changed("max") {
				body.Max = &max
			}
			if body.MinIdle == nil && body.Max == nil {
				return errors.New("give --min-idle and/or --max")
			}
			return poolAction(cmd, o, args[0], "scale", body)
		},
	}
	scale.Flags().IntVar(&minIdle, "min-idle", 0, "idle VMs to keep ready")
	scale.Flags().IntVar(&max, "max", 0, "most VMs at once")

	pause := &cobra.Command{
		Use:   "pause POOL",
		Short: "Start no new VMs in a pool; running ones finish their jobs",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return poolAction(cmd, o, args[0], "pause", nil)
		},
	}
	resume := &cobra.Command{
		Use:   "resume POOL",
		Short: "Let a paused pool start VMs again",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return poolAction(cmd, o, args[0], "resume", nil)
		},
	}
	cmd.AddCommand(ls, scale, pause, resume)
	return cmd
}

// poolAction posts to /api/v1/pools/POOL/ACTION and prints the pool.
func poolAction(cmd *cobra.Command, o *clientOpts, name, action string, body any) error {
	c, err := o.client(cmd)
	if err != nil {
		return err
	}
	raw, err := c.call(cmd.Context(), "POST", "/api/v1/pools/"+url.PathEscape(name)+"/"+action, body)
	if err != nil {
		return err
	}
	if o.output == "json" {
		return printJSON(cmd.OutOrStdout(), raw)
	}
	var p pool.PoolStatus
	if err := decodeAnswer(raw, &p); err != nil {
		return err
	}
	return printPools(cmd.OutOrStdout(), []pool.PoolStatus{p})
}

func printPools(w io.Writer, pools []pool.PoolStatus) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tFORGE\tSCOPE\tMIN\tMAX\tPAUSED\tIDLE\tBUSY\tBOOTING\tQUEUED")
	for _, p := range pools {
		paused := "no"
		if p.Paused {
			paused = "yes"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\t%d\t%d\t%d\t%d\n",
			p.Name, dash(p.Forge), dash(p.Scope), p.MinIdle, p.Max, paused,
			p.VMs[vmstate.Idle], p.VMs[vmstate.Busy], p.VMs[vmstate.Creating]+p.VMs[vmstate.Booting], p.Queued)
	}
	return tw.Flush()
}

// dash stands in for an empty table cell.
func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
