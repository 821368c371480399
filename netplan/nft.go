package netplan

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
)

// Rules is the orchestrator's own nftables table for one bridge. It is
// replaced as a whole in one nft transaction, so no half-applied rule set
// is ever live.
type Rules struct {
	Bridge string
	Prefix netip.Prefix
	NAT    bool
}

// Table is the name of the table, unique per bridge.
func (r Rules) Table() string {
	return "fireactions_" + strings.NewReplacer("-", "_", ".", "_").Replace(r.Bridge)
}

// Script is the nft program that replaces the table.
func (r Rules) Script() string {
	var b strings.Builder
	t := r.Table()
	// Creating then deleting makes the delete safe when the table is absent;
	// nft -f applies the whole file as one transaction.
	fmt.Fprintf(&b, "table ip %s {}\ndelete table ip %s\n", t, t)
	fmt.Fprintf(&b, "table ip %s {\n", t)
	fmt.Fprintf(&b, "  chain forward {\n    type filter hook forward priority filter; policy accept;\n")
	// Routed VM-to-VM traffic between bridges never passes; on one bridge
	// frames are switched, not routed (isolation there is its own layer).
	fmt.Fprintf(&b, "    iifname %q ip daddr %s drop\n", r.Bridge, r.Prefix)
	fmt.Fprintf(&b, "  }\n")
	if r.NAT {
		fmt.Fprintf(&b, "  chain postrouting {\n    type nat hook postrouting priority srcnat; policy accept;\n")
		fmt.Fprintf(&b, "    ip saddr %s oifname != %q masquerade\n", r.Prefix, r.Bridge)
		fmt.Fprintf(&b, "  }\n")
	}
	fmt.Fprintf(&b, "}\n")
	return b.String()
}

// Apply replaces the table.
func (r Rules) Apply(ctx context.Context) error {
	return nft(ctx, r.Script())
}

// Remove deletes the table; an absent table is not an error.
func (r Rules) Remove(ctx context.Context) error {
	t := r.Table()
	return nft(ctx, fmt.Sprintf("table ip %s {}\ndelete table ip %s\n", t, t))
}

func nft(ctx context.Context, script string) error {
	cmd := exec.CommandContext(ctx, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("nft: %w: %s", err, strings.TrimSpace(out.String()))
	}
	return nil
}
