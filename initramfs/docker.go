package initramfs

import "fmt"

// The iptables back ends an image's Docker may use for its bridge's
// rules: iptables-nft (Debian bookworm's default, rules through nf_tables
// and, for x_tables matches, nft_compat) or iptables-legacy (the
// ip_tables tables). Each needs kernel modules the other does not.
const (
	NFT    = "nft"
	Legacy = "legacy"
)

// Docker's modules: those of either back end (its bridge and veth pairs,
// br_netfilter for the bridge's rules, overlay for overlay2, connection
// tracking and NAT, the x_tables matches its rules use), then each back
// end's own.
var (
	dockerCommon = []string{
		"bridge", "veth", "br_netfilter", "overlay",
		"nf_conntrack", "nf_nat",
		"xt_addrtype", "xt_conntrack", "xt_MASQUERADE",
	}
	dockerBackend = map[string][]string{
		NFT:    {"nf_tables", "nft_compat", "nft_chain_nat", "nft_masq", "nft_ct"},
		Legacy: {"ip_tables", "iptable_filter", "iptable_nat"},
	}
)

// DockerModules are the kernel modules dockerd needs in a guest whose
// iptables uses backend (NFT or Legacy); "" is both, for a pool whose
// image is not known yet (the boot archive holds both; see
// DockerBackendModules).
func DockerModules(backend string) []string {
	out := append([]string(nil), dockerCommon...)
	if backend == "" {
		return append(append(out, dockerBackend[NFT]...), dockerBackend[Legacy]...)
	}
	return append(out, dockerBackend[backend]...)
}

// ModulesFor is the modules a pool's VMs load: its kernel_modules (names)
// and, when it asks for Docker, those of DockerModules("") (both back
// ends) they lack, after them. A pool without kernel_modules has a kernel
// with its drivers built in: nothing is added. The boot archive and
// doctor both use it.
func ModulesFor(names []string, docker bool) []string {
	if !docker {
		return names
	}
	return modulesWith(names, "")
}

// modulesWith is names and the Docker modules of backend they lack.
func modulesWith(names []string, backend string) []string {
	if len(names) == 0 {
		return names
	}
	out := append([]string(nil), names...)
	seen := map[string]bool{}
	for _, n := range names {
		seen[moduleName(n)] = true
	}
	for _, n := range DockerModules(backend) {
		if !seen[moduleName(n)] {
			out = append(out, n)
		}
	}
	return out
}

// DockerBackendModules are, for each back end, the guest paths of the
// modules of all (the boot archive's modules, resolved from
// ModulesFor(names, true)) that a guest whose image uses that back end
// loads: the pool's own, Docker's common ones and its back end's, each
// with its dependencies, in all's order. A guest loads no module only the
// other back end needs.
func DockerBackendModules(modulesDir string, names []string, all []Module) (map[string][]string, error) {
	out := map[string][]string{}
	if len(names) == 0 {
		return out, nil
	}
	for _, backend := range []string{NFT, Legacy} {
		need, err := ResolveModules(modulesDir, modulesWith(names, backend))
		if err != nil {
			return nil, fmt.Errorf("docker's %s modules: %w", backend, err)
		}
		want := map[string]bool{}
		for _, m := range need {
			want[m.Name] = true
		}
		var paths []string
		for _, m := range all {
			if want[m.Name] {
				paths = append(paths, m.GuestPath)
				delete(want, m.Name)
			}
		}
		if len(want) > 0 {
			return nil, fmt.Errorf("docker's %s modules: %d not in the boot archive", backend, len(want))
		}
		out[backend] = paths
	}
	return out, nil
}
