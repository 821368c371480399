package config

import (
	"net/netip"
	"path/filepath"
	"strings"
)

// defaultRunnerPath is the runner agent's default path inside the guest
// for a forge type, or "" when that type has none and runner.path must be
// set.
func defaultRunnerPath(forgeType string) string {
	switch forgeType {
	case "gitea":
		return "/bin/act_runner"
	case "github":
		return "/home/runner/run.sh" // the actions-runner image's layout
	case "gitlab":
		return "/usr/bin/gitlab-runner"
	}
	return ""
}

// Defaults that depend on a forge's type.
const (
	// defaultGitHubURL is a github forge's url: GitHub.com's REST API.
	defaultGitHubURL = "https://api.github.com"
	// defaultGitLabLocked, defaultGitLabAccessLevel,
	// defaultGitLabExecutor and defaultGitLabImage are a gitlab pool's
	// runner.locked, runner.access_level, runner.executor and
	// runner.default_image.
	defaultGitLabLocked      = true
	defaultGitLabAccessLevel = "not_protected"
	defaultGitLabExecutor    = "auto"
	defaultGitLabImage       = "alpine:latest"
)

// deriveDefaults fills the defaults that depend on other fields, where the
// file leaves them empty. It never fails: what cannot be derived stays
// empty for validation to report.
func deriveDefaults(c *Config, hostname string) {
	if c.HostID == "" {
		c.HostID = sanitizeHostID(hostname)
	}
	deriveImages(c)
	n := &c.Network
	if p, err := parseCIDR(n.CIDR); err == nil && n.Gateway == "" {
		n.Gateway = p.Addr().Next().String()
	}
	if len(n.DNS) == 0 && n.Gateway != "" {
		n.DNS = []string{n.Gateway}
	}
	deriveGitHub(c)
	deriveGitea(c)
	deriveRegistryCache(c) // after the gateway
	deriveFleet(c)
	forgeTypes := map[string]string{}
	forgejo := map[string]bool{}
	for i := range c.Forges {
		f := &c.Forges[i]
		if f.URL == "" && f.Type == "github" {
			f.URL = defaultGitHubURL
		}
		if f.GuestURL == "" {
			f.GuestURL = f.URL
		}
		forgeTypes[f.Name] = f.Type
		if f.Type == "gitea" && f.Flavor == FlavorForgejo {
			forgejo[f.Name] = true
		}
	}
	for i := range c.Pools {
		p := &c.Pools[i]
		if p.VM.ModulesDir == "" {
			if v := kernelVersion(p.VM.Kernel); v != "" {
				p.VM.ModulesDir = "/lib/modules/" + v
			}
		}
		r := &p.Runner
		typ := forgeTypes[p.Forge]
		if r.Path == "" {
			r.Path = defaultRunnerPath(typ)
			if forgejo[p.Forge] {
				r.Path = defaultForgejoRunnerPath
			}
		}
		if r.GID == 0 {
			r.GID = r.UID
		}
		if typ == "gitlab" {
			if r.Locked == nil {
				locked := defaultGitLabLocked
				r.Locked = &locked
			}
			if r.AccessLevel == "" {
				r.AccessLevel = defaultGitLabAccessLevel
			}
			if r.Executor == "" {
				r.Executor = defaultGitLabExecutor
			}
			if r.DefaultImage == "" {
				r.DefaultImage = defaultGitLabImage
			}
		}
	}
}

// sanitizeHostID turns a hostname into a host_id: lower case, characters
// other than a-z, 0-9 and '-' turned into '-', no '-' at either end, at
// most 20 characters.
func sanitizeHostID(hostname string) string {
	s := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-':
			return r
		case r >= 'A' && r <= 'Z':
			return r + ('a' - 'A')
		}
		return '-'
	}, hostname)
	s = strings.Trim(s, "-")
	if len(s) > 20 {
		s = strings.TrimRight(s[:20], "-")
	}
	return s
}

// kernelVersion is what follows "vmlinuz-" or "vmlinux-" in the kernel
// file's base name, or "" when the name has another form.
func kernelVersion(kernel string) string {
	if kernel == "" {
		return ""
	}
	base := filepath.Base(kernel)
	for _, prefix := range []string{"vmlinuz-", "vmlinux-"} {
		if v, ok := strings.CutPrefix(base, prefix); ok && v != "" {
			return v
		}
	}
	return ""
}

// parseCIDR parses network.cidr: an IPv4 network address with a prefix
// length of at most 30, leaving room for a gateway and a VM.
func parseCIDR(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	switch {
	case s == "":
		return p, errMissing
	case err != nil || !p.Addr().Is4():
		return p, errorf("%q is not an IPv4 prefix such as 10.200.0.0/24", s)
	case p.Bits() > 30:
		return p, errorf("prefix length /%d leaves no room for VMs (at most /30)", p.Bits())
	case p.Masked() != p:
		return p, errorf("%q is not a network address (did you mean %s?)", s, p.Masked())
	}
	return p, nil
}
