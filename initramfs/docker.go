package initramfs

// DockerModules are the kernel modules dockerd needs in a guest: its
// bridge and veth pairs, br_netfilter for the bridge's iptables rules,
// overlay for overlay2, and NAT with both iptables back ends (bookworm's
// iptables is iptables-nft, whose Docker rules also use x_tables matches
// through nft_compat; older images use the legacy tables). A pool whose
// kernel_modules are set gets them added when it asks for Docker
// (cache.docker); those its kernel has built in are left out as any are.
var DockerModules = []string{
	"bridge", "veth", "br_netfilter", "overlay",
	"nf_conntrack", "nf_nat",
	"nf_tables", "nft_compat", "nft_chain_nat", "nft_masq", "nft_ct",
	"xt_addrtype", "xt_conntrack", "xt_MASQUERADE",
	"ip_tables", "iptable_filter", "iptable_nat",
}

// ModulesFor is the modules a pool's VMs load: its kernel_modules (names)
// and, when it asks for Docker, those of DockerModules they lack, after
// them. A pool without kernel_modules has a kernel with its drivers built
// in: nothing is added. The boot archive and doctor both use it.
func ModulesFor(names []string, docker bool) []string {
	if !docker || len(names) == 0 {
		return names
	}
	out := append([]string(nil), names...)
	seen := map[string]bool{}
	for _, n := range names {
		seen[moduleName(n)] = true
	}
	for _, n := range DockerModules {
		if !seen[moduleName(n)] {
			out = append(out, n)
		}
	}
	return out
}
