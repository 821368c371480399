package config

import (
	"slices"
	"strings"
	"testing"
)

// testCAPEM is a self-signed CA certificate (the public half only).
const testCAPEM = `-----BEGIN CERTIFICATE-----
MIIBrzCCAVWgAwIBAgIUNLKYwkXytsCvWdewVrZJCGA9V8gwCgYIKoZIzj0EAwIw
JDEiMCAGA1UEAwwZZmlyZWFjdGlvbnMgdGVzdCBjYWNoZSBDQTAgFw0yNjExMjgw
ODQ3MjZaGA8yMTI2MTEwNDA4NDcyNlowJDEiMCAGA1UEAwwZZmlyZWFjdGlvbnMg
dGVzdCBjYWNoZSBDQTBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABFMa+p5m1h1c
KcAPNiPVfA/ySUPeUGKz4jQ9hj2cC4lLUlLrszm8I+8hmAzzUGuWigHPcLTAyQIN
0ppHvkC6zt+jYzBhMB0GA1UdDgQWBBSpaIXRz3ZkYimy0VTY5edqXKvkqzAfBgNV
HSMEGDAWgBSpaIXRz3ZkYimy0VTY5edqXKvkqzAPBgNVHRMBAf8EBTADAQH/MA4G
A1UdDwEB/wQEAwIBBjAKBggqhkjOPQQDAgNIADBFAiEAuDY3DyE7aIf3qnxThB0n
OUKacqhVBCDHl7HoOGnqDdECIDV604BGUKRqGsn6z2PHDAS2ovt+KjoNKrleFuBD
ifYD
-----END CERTIFICATE-----
`

const cacheYAML = `registry_cache:
  mirrors:
    - registry: docker.io
      urls: [http://10.200.0.1:5000]
    - registry: ghcr.io
      urls: [http://10.200.0.1:5000/ghcr.io]
    - registry: registry.example.com:5443
      urls: [https://cache.example.com/rex]
  http_proxy: http://ci:pa$$word@10.200.0.1:3128
  https_proxy: http://10.200.0.1:3128
  ca_file: $DIR/cache-ca.pem
`

// A registry cache on the gateway: its CA is read, no_proxy defaults to
// the local names, the gateway and the mirrors' hosts, guests may reach
// its ports, and the image store gets its mirrors after images.mirrors.
func TestRegistryCacheParses(t *testing.T) {
	f := newFixture(t)
	f.write("cache-ca.pem", testCAPEM, 0o644)
	text := replace(t, minimalYAML, "host_id:", "images: {mirrors: [{registry: docker.io, urls: [\"http://own:5000\"]}]}\n"+cacheYAML+"host_id:")
	text = replace(t, text, "    max: 2\n", "    max: 2\n    cache: {docker: true}\n")
	cfg := f.mustParse(text)
	rc := cfg.RegistryCache
	if string(rc.CA) != testCAPEM {
		t.Errorf("CA %q", rc.CA)
	}
	if rc.HTTPProxy != "http://ci:pa$$word@10.200.0.1:3128" {
		t.Errorf("http_proxy %q: the '$' were touched", rc.HTTPProxy)
	}
	if want := []string{"localhost", "127.0.0.1", "::1", "10.200.0.1", "cache.example.com"}; !slices.Equal(rc.NoProxy, want) {
		t.Errorf("no_proxy %q, want %q", rc.NoProxy, want)
	}
	if want := []int{5000, 3128}; !slices.Equal(cfg.Network.AllowTCPPorts, want) {
		t.Errorf("allow_tcp_ports %v, want %v (the cache's ports on the gateway)", cfg.Network.AllowTCPPorts, want)
	}
	if !cfg.Pools[0].Cache.Docker || cfg.Pools[0].Cache.Bypass {
		t.Errorf("pool cache %+v", cfg.Pools[0].Cache)
	}
	var got []string
	for _, m := range cfg.PullMirrors() {
		got = append(got, m.Registry+"="+strings.Join(m.URLs, ","))
	}
	want := []string{"docker.io=http://own:5000", "docker.io=http://10.200.0.1:5000", "ghcr.io=http://10.200.0.1:5000/ghcr.io",
		"registry.example.com:5443=https://cache.example.com/rex"}
	if !slices.Equal(got, want) {
		t.Errorf("pull mirrors %q, want %q", got, want)
	}

	// Set explicitly, no_proxy and allow_tcp_ports are kept as they are.
	text = replace(t, text, "  ca_file:", "  no_proxy: [.corp]\n  ca_file:")
	cfg = f.mustParse(replace(t, text, "host_id:", "network: {allow_tcp_ports: [3128]}\nhost_id:"))
	if !slices.Equal(cfg.RegistryCache.NoProxy, []string{".corp"}) || !slices.Equal(cfg.Network.AllowTCPPorts, []int{3128, 5000}) {
		t.Errorf("no_proxy %q, allow_tcp_ports %v", cfg.RegistryCache.NoProxy, cfg.Network.AllowTCPPorts)
	}

	// Offline, the CA file is named, not read.
	off, err := ParseOffline(testFile, []byte(f.expand(replace(t, text, "$DIR/cache-ca.pem", "/nowhere/ca.pem"))))
	if err != nil || off.RegistryCache.CA != nil {
		t.Fatalf("offline: %v, CA %q", err, off.RegistryCache.CA)
	}
}

// Each case is one mistake in registry_cache; the problem names its field
// and never shows the proxy's password.
func TestRegistryCacheMistakes(t *testing.T) {
	tests := []struct{ name, old, new, field, want string }{
		{"Docker Hub alias", "registry: docker.io", "registry: index.docker.io", "registry_cache.mirrors[0].registry", "write docker.io"},
		{"registry with a scheme", "registry: ghcr.io", "registry: https://ghcr.io", "registry_cache.mirrors[1].registry", "not a registry host"},
		{"registry twice", "registry: ghcr.io", "registry: docker.io", "registry_cache.mirrors[1].registry", "listed twice"},
		{"mirror without URLs", "      urls: [http://10.200.0.1:5000/ghcr.io]\n", "", "registry_cache.mirrors[1].urls", "at least one"},
		{"mirror with a query", "[http://10.200.0.1:5000/ghcr.io]", "[\"http://10.200.0.1:5000/ghcr.io?x=1\"]", "registry_cache.mirrors[1].urls[0]", "only a scheme"},
		{"mirror with credentials", "https://cache.example.com/rex", "https://u:p@cache.example.com/rex", "registry_cache.mirrors[2].urls[0]", "credentials"},
		{"proxy with a path", "http://ci:pa$$word@10.200.0.1:3128", "socks5://ci:pa$$word@10.200.0.1:3128", "registry_cache.http_proxy", "scheme must be http"},
		{"bad no_proxy", "  ca_file:", "  no_proxy: [\"a,b\"]\n  ca_file:", "registry_cache.no_proxy[0]", "not a host"},
		{"key as CA", "$DIR/cache-ca.pem", "$DIR/app.pem", "registry_cache.ca_file", "certificates only"},
		{"missing CA", "$DIR/cache-ca.pem", "$DIR/nope.pem", "registry_cache.ca_file", "no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			f.write("cache-ca.pem", testCAPEM, 0o644)
			text := replace(t, replace(t, minimalYAML, "host_id:", cacheYAML+"host_id:"), tt.old, tt.new)
			f.wantFieldError(text, tt.field, tt.want, "pa$$word")
		})
	}
}
