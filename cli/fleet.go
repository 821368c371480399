package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/nixos-fireactions/nixos-fireactions/config"
	"github.com/nixos-fireactions/nixos-fireactions/daemon"
	"github.com/nixos-fireactions/nixos-fireactions/fleet"
)

// fleetStatusTimeout bounds reading the fleet's state.
const fleetStatusTimeout = 15 * time.Second

// fleetCmd is `fireactions fleet status`: the fleet's hosts and claims,
// read from NATS with the configuration's fleet section (not through the
// API: it shows the fleet as every host sees it, and says so when this
// host cannot reach NATS).
func fleetCmd() *cobra.Command {
	var configPath string
	var asJSON bool
	cmd := &cobra.Command{Use: "fleet", Short: "The fleet of hosts sharing demand through NATS", Args: cobra.NoArgs}
	cmd.PersistentFlags().StringVarP(&configPath, "config", "c", os.Getenv(envConfig),
		"configuration file with the fleet section (env "+envConfig+")")
	status := &cobra.Command{
		Use:   "status",
		Short: "List the fleet's hosts and claims, with their ages; fails when NATS cannot be reached",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if configPath == "" {
				return fmt.Errorf("no configuration: pass --config FILE or set %s", envConfig)
			}
			cfg, err := config.Load(configPath)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), fleetStatusTimeout)
			defer cancel()
			st, err := daemon.FleetStatus(ctx, cfg)
			if err != nil {
				return fmt.Errorf("host %s is cut off from its fleet: %w", cfg.HostID, err)
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(st)
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "HOST\tSINCE\tLAST SEEN\tCLAIMS\tPOOLS")
			for _, h := range st.Hosts {
				fmt.Fprintf(w, "%s\t%s\t%s ago\t%d\t%s\n", h.HostID, h.Since.Format(time.RFC3339), h.LastSeen.Round(time.Millisecond), h.Claims, fleet.LoadsText(h.Pools))
			}
			fmt.Fprintln(w, "\nCLAIMED BY\tJOB\tAGE\tREFRESHED")
			for _, c := range st.Claims {
				fmt.Fprintf(w, "%s\t%q\t%s\t%s ago\n", c.Host, c.Job, c.Age.Round(time.Second), c.Refreshed.Round(time.Millisecond))
			}
			if err := w.Flush(); err != nil {
				return err
			}
			if !slices.ContainsFunc(st.Hosts, func(h fleet.HostStatus) bool { return h.HostID == cfg.HostID }) {
				fmt.Fprintf(cmd.OutOrStdout(), "\nthis host (%s) is not in the fleet: its orchestrator is stopped, or cut off from NATS\n", cfg.HostID)
			}
			return nil
		},
	}
	status.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.AddCommand(status)
	return cmd
}
