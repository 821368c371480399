package config

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
)

// RegistryCache is the host's registry cache and web proxy, as guests and
// the image store use them.
type RegistryCache struct {
	Mirrors    []CacheMirror `yaml:"mirrors" doc:"Pull-through caches per registry. Guests get them as containerd hosts.toml, BuildKit mirrors and (Docker Hub's, served at a cache's root) Docker registry-mirrors; the orchestrator's own image pulls try them after images.mirrors."`
	HTTPProxy  string        `yaml:"http_proxy" doc:"Proxy URL for plain HTTP, as guests reach it: HTTP_PROXY and http_proxy of the runner and dockerd."`
	HTTPSProxy string        `yaml:"https_proxy" doc:"Proxy URL for HTTPS (CONNECT), as guests reach it: HTTPS_PROXY and https_proxy."`
	NoProxy    []string      `yaml:"no_proxy" doc:"Hosts, domains (.example.com), addresses and CIDRs reached without the proxy: NO_PROXY and no_proxy. Default: when a proxy is set, localhost, 127.0.0.1, ::1, the gateway and the mirrors' hosts."`
	CAFile     string        `yaml:"ca_file" doc:"PEM certificate the proxy signs intercepted HTTPS with (SSL bump), put into the guests' trust store; the public certificate only, never the key. Empty: the proxy intercepts nothing."`
	// CA is the PEM read from CAFile by Load.
	CA []byte `yaml:"-"`
}

// CacheMirror lists one registry's pull-through caches.
type CacheMirror struct {
	Registry string   `yaml:"registry" doc:"Required. Registry host[:port] whose images the mirrors serve; docker.io for Docker Hub."`
	URLs     []string `yaml:"urls" doc:"Required. Mirror base URLs, tried in order: http or https, host and port, and optionally a path: the repository prefix under which the cache serves this registry (Zot's sync keeps ghcr.io's images under /ghcr.io). Docker uses Docker Hub's mirrors without a path only."`
}

// PoolCache is what a pool's guests take of registry_cache.
type PoolCache struct {
	Bypass bool `yaml:"bypass" doc:"Give this pool's guests none of registry_cache (its mirrors, proxy and CA); the image store still pulls through its mirrors."`
	Docker bool `yaml:"docker" doc:"Start dockerd before the runner (with the mirrors, the proxy, cgroup2, its socket open to the runner's group, /var/lib/docker on the VM's writable disk, and a bridge subnet clear of the VM network and the cache), and add Docker's kernel modules to kernel_modules when those are set. An image without dockerd is an error before boot; a guest root without it fails at boot."`
}

// PullMirrors are the image store's mirrors: images.mirrors, then
// registry_cache.mirrors.
func (c *Config) PullMirrors() []RegistryMirror {
	out := append([]RegistryMirror(nil), c.Images.Mirrors...)
	for _, m := range c.RegistryCache.Mirrors {
		out = append(out, RegistryMirror{Registry: m.Registry, URLs: m.URLs})
	}
	return out
}

// deriveRegistryCache fills no_proxy when a proxy is set, and adds the
// ports of cache URLs on the gateway to network.allow_tcp_ports: guests
// may reach the cache they are given.
func deriveRegistryCache(c *Config) {
	rc, n := &c.RegistryCache, &c.Network
	var urls []string
	for _, m := range rc.Mirrors {
		urls = append(urls, m.URLs...)
	}
	proxies := []string{rc.HTTPProxy, rc.HTTPSProxy}
	if len(rc.NoProxy) == 0 && (rc.HTTPProxy != "" || rc.HTTPSProxy != "") {
		rc.NoProxy = []string{"localhost", "127.0.0.1", "::1"}
		if n.Gateway != "" {
			rc.NoProxy = append(rc.NoProxy, n.Gateway)
		}
		for _, s := range urls {
			if u, err := url.Parse(s); err == nil && u.Hostname() != "" && !slices.Contains(rc.NoProxy, u.Hostname()) {
				rc.NoProxy = append(rc.NoProxy, u.Hostname())
			}
		}
	}
	for _, s := range append(urls, proxies...) {
		u, err := url.Parse(s)
		if err != nil || u.Hostname() != n.Gateway || n.Gateway == "" {
			continue
		}
		port := u.Port()
		if port == "" {
			port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
		}
		if p, err := strconv.Atoi(port); err == nil && p != n.AgentPort && !slices.Contains(n.AllowTCPPorts, p) {
			n.AllowTCPPorts = append(n.AllowTCPPorts, p)
		}
	}
}

// registryCache checks the registry_cache section and reads its CA.
func (v *validator) registryCache(f field, rc *RegistryCache) {
	seen := map[string]bool{}
	for i, m := range rc.Mirrors {
		mf := f.child("mirrors").index(i)
		err := registryHost(m.Registry)
		if err == nil && seen[m.Registry] {
			err = errorf("%s is listed twice", m.Registry)
		}
		seen[m.Registry] = true
		v.check(rule{mf.child("registry"), err})
		if len(m.URLs) == 0 {
			v.check(rule{mf.child("urls"), errors.New("at least one mirror URL is required")})
		}
		for j, u := range m.URLs {
			v.check(rule{mf.child("urls").index(j), cacheMirrorURL(u)})
		}
	}
	v.check(
		rule{f.child("http_proxy"), optional(rc.HTTPProxy, proxyURL)},
		rule{f.child("https_proxy"), optional(rc.HTTPSProxy, proxyURL)},
	)
	for i, h := range rc.NoProxy {
		var err error
		if h == "" || strings.ContainsAny(h, ", \t\n") {
			err = errorf("%q is not a host, domain, address or CIDR", h)
		}
		v.check(rule{f.child("no_proxy").index(i), err})
	}
	var caErr error
	switch {
	case rc.CAFile == "":
	case v.offline:
		caErr = absolute(rc.CAFile)
	default:
		rc.CA, caErr = readCertificates(rc.CAFile)
	}
	v.check(rule{f.child("ca_file"), caErr})
}

// registryHost accepts a registry's host[:port].
func registryHost(s string) error {
	switch {
	case s == "":
		return errMissing
	case s == "index.docker.io" || s == "registry-1.docker.io":
		return errorf("%q: write docker.io for Docker Hub", s)
	case strings.ContainsAny(s, "/ \t\n\"\\") || strings.Contains(s, "://"):
		return errorf("%q is not a registry host[:port]", s)
	}
	host := s
	if h, _, err := net.SplitHostPort(s); err == nil {
		host = h
	}
	if _, err := netip.ParseAddr(host); err != nil && !hostnamePattern.MatchString(host) {
		return errorf("%q is not a registry host[:port]", s)
	}
	return nil
}

// cacheMirrorURL accepts a mirror's base URL: http or https, a host, an
// optional path, nothing else.
func cacheMirrorURL(s string) error {
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return errorf("%q is not a URL", s)
	case u.Scheme != "http" && u.Scheme != "https":
		return errorf("%q: the scheme must be http or https", s)
	case u.Host == "":
		return errorf("%q has no host", s)
	case u.User != nil:
		return errors.New("a mirror URL may not hold credentials")
	case u.RawQuery != "" || u.Fragment != "":
		return errorf("%q: only a scheme, a host (and port) and a path are allowed", s)
	}
	return nil
}

// proxyURL accepts a proxy's URL: http or https, a host, no path. Its
// credentials, if any, never appear in a message.
func proxyURL(s string) error {
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return errors.New("is not a URL")
	case u.Scheme != "http" && u.Scheme != "https":
		return errorf("%s: the scheme must be http or https", u.Redacted())
	case u.Host == "":
		return errorf("%s has no host", u.Redacted())
	case (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "":
		return errorf("%s: a proxy URL is a scheme, a host and a port", u.Redacted())
	}
	return nil
}

// readCertificates reads a PEM file of certificates only (the public
// half of a CA: a private key in it is refused).
func readCertificates(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, pathError(path, err)
	}
	rest, n := b, 0
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, errorf("%s holds a PEM %q block; want certificates only (never the CA's key)", path, block.Type)
		}
		if _, err := x509.ParseCertificate(block.Bytes); err != nil {
			return nil, errorf("%s: a certificate does not parse: %v", path, err)
		}
		n++
	}
	if n == 0 {
		return nil, errorf("%s holds no PEM certificate", path)
	}
	return b, nil
}
