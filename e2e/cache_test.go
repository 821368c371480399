//go:build e2e

package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/distribution/distribution/v3/configuration"
	"github.com/distribution/distribution/v3/registry/handlers"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/inmemory"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
	"github.com/nixos-fireactions/nixos-fireactions/config"
	"github.com/nixos-fireactions/nixos-fireactions/initramfs"
	"github.com/nixos-fireactions/nixos-fireactions/internal/hosttest"
	"github.com/nixos-fireactions/nixos-fireactions/netplan"
	"github.com/nixos-fireactions/nixos-fireactions/pool"
	"github.com/nixos-fireactions/nixos-fireactions/vmm"
	"github.com/nixos-fireactions/nixos-fireactions/vmm/qemu"
)

// cacheProbe is the runner of the guest: it prints what the agent gave
// it (its proxy environment, the mirror files, the CA in the trust
// store) and whether the mirror on its gateway answers.
const cacheProbe = `env | grep -E '^(HTTPS?_PROXY|NO_PROXY|https?_proxy|no_proxy|NODE_EXTRA_CA_CERTS)=' | sort | sed 's/^/CACHE-ENV /'
for f in /etc/containerd/certs.d/*/hosts.toml /etc/docker/daemon.json /etc/buildkit/buildkitd.toml; do
  echo "CACHE-FILE $f"
  sed "s|^|CACHE-LINE $f |" "$f"
done
grep -q "$1" /etc/ssl/certs/ca-certificates.crt && echo "CACHE-CA trusted"
env -u http_proxy -u HTTP_PROXY wget -q -O /dev/null "http://$2/v2/" && echo "CACHE-MIRROR reachable"
echo "CACHE-DONE"`

// byteCounter counts a handler's requests and response body bytes.
type byteCounter struct {
	requests, bytes atomic.Int64
	h               http.Handler
}

func (c *byteCounter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.requests.Add(1)
	c.h.ServeHTTP(countingWriter{w, &c.bytes}, r)
}

type countingWriter struct {
	http.ResponseWriter
	n *atomic.Int64
}

func (w countingWriter) Write(b []byte) (int, error) {
	n, err := w.ResponseWriter.Write(b)
	w.n.Add(int64(n))
	return n, err
}

// TestCacheReachesGuestsAndOrchestrator configures a registry cache the
// way a host does (registry_cache in the orchestrator's configuration)
// and proves both of its users: a QEMU guest booted with the agent
// configuration the pool makes from it sees the proxy in its runner's
// environment, the containerd, Docker and BuildKit mirror files, the CA
// in its trust store, and reaches the mirror on its gateway; and the
// orchestrator's image pulls (`fireactions image pull`) go through the
// mirror, a distribution pull-through cache on the bridge, so that a
// second pull into an empty store takes no byte from the upstream
// registry.
func TestCacheReachesGuestsAndOrchestrator(t *testing.T) {
	requireRoot(t)
	cache := cacheDir()
	kernel, modules := hostKernel(t)
	bin := buildBinaries(t)
	work := t.TempDir()

	ns := newNetns(t, fmt.Sprintf("facache%d", os.Getpid()%100000))
	prefix := netip.MustParsePrefix("10.215.0.0/24")
	br := netplan.Bridge{Name: "facache0", Prefix: prefix, Gateway: prefix.Addr().Next(), MTU: 1500}
	gw := br.Gateway.String()
	inNetns(t, ns, br.Ensure)
	run(t, "ip", "netns", "exec", ns.name, "sysctl", "-qw", "net.ipv4.ip_forward=1")

	// The upstream registry, outside the namespace: only the mirror (whose
	// client runs in this process) can reach it, not the orchestrator.
	upstream := &byteCounter{h: hosttest.Registry()}
	up := httptest.NewServer(upstream)
	t.Cleanup(up.Close)
	upHost := strings.TrimPrefix(up.URL, "http://")
	img, err := random.Image(4<<20, 3)
	if err != nil {
		t.Fatal(err)
	}
	imageRef := upHost + "/e2e/app:v1"
	ref, _ := name.ParseReference(imageRef)
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	digest, _ := img.Digest()

	// The mirror: distribution as a pull-through cache of the upstream,
	// on the bridge's gateway.
	dcfg := &configuration.Configuration{}
	dcfg.Storage = configuration.Storage{"inmemory": configuration.Parameters{}}
	dcfg.Proxy.RemoteURL = up.URL
	dcfg.Log.Level = "error"
	dcfg.Log.AccessLog.Disabled = true
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	mirror := &byteCounter{h: handlers.NewApp(ctx, dcfg)}
	mirrorAddr := gw + ":5000"
	serveIn(t, ns, mirrorAddr, mirror)
	serveIn(t, ns, gw+":8089", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) }))

	// The host's configuration: the cache, its proxy (with a password full
	// of '$'), its CA; two image stores, so that each pull starts empty.
	caPEM := testCA(t)
	caLine := strings.Split(string(caPEM), "\n")[1]
	writeFile(t, filepath.Join(work, "ca.pem"), 0o644, string(caPEM))
	writeFile(t, filepath.Join(work, "token"), 0o600, "unused-token\n")
	root := filepath.Join(work, "root.cpio.gz")
	buildGuestRoot(t, cache, root)
	const proxy = "http://ci:pa$$w0rd@10.215.0.1:3128"
	configFor := func(store string) string {
		p := filepath.Join(work, store+".yaml")
		c := &orchConfig{
			HostID:   "cache-e2e",
			StateDir: filepath.Join(work, "state"),
			Network:  networkConfig{Bridge: "facache0", CIDR: "10.215.0.0/24"},
			Images:   &imagesConfig{Dir: filepath.Join(work, store)},
			RegistryCache: &registryCacheConfig{
				Mirrors: []mirrorConfig{
					{Registry: upHost, URLs: []string{"http://" + mirrorAddr}},
					{Registry: "docker.io", URLs: []string{"http://" + mirrorAddr}},
					{Registry: "ghcr.io", URLs: []string{"http://" + mirrorAddr + "/ghcr.io"}},
				},
				HTTPProxy:  proxy,
				HTTPSProxy: "http://10.215.0.1:3128",
				CAFile:     filepath.Join(work, "ca.pem"),
			},
			Forges: []forgeConfig{{Name: "gitea", Type: "gitea", URL: "http://10.215.0.1:3000", TokenFile: filepath.Join(work, "token")}},
			Pools: []poolConfig{{
				Name: "cached", Forge: "gitea", Labels: []string{"linux"}, Max: 1,
				VM: vmConfig{Kernel: kernel, RootInitramfs: root},
			}},
		}
		c.write(t, p)
		return p
	}
	cfgPath := configFor("images-1")
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}

	// The guest, with the agent configuration the pool makes, behind the
	// host rules the configuration implies (the cache's ports derived).
	rules := netplan.Rules{Bridge: br.Name, Prefix: prefix, Gateway: br.Gateway, NAT: true,
		HostTCP: append([]int{cfg.Network.AgentPort}, cfg.Network.AllowTCPPorts...)}
	inNetns(t, ns, func() error { return rules.Apply(context.Background()) })
	mods, err := initramfs.ResolveModules(modules, []string{"virtio_mmio", "virtio_net"})
	if err != nil {
		t.Fatal(err)
	}
	boot := filepath.Join(work, "boot.cpio")
	if err := (initramfs.Boot{RootArchive: root, Agent: filepath.Join(bin, "fireactions-agent"), Modules: mods}).WritePool(boot); err != nil {
		t.Fatal(err)
	}
	guestIP := netip.MustParseAddr("10.215.0.2")
	agentCfg := agentproto.Config{
		VMID: "cache1", Hostname: "cache1", Modules: initramfs.GuestPaths(mods),
		Network:  agentproto.Network{Interface: "eth0", Address: netip.PrefixFrom(guestIP, 24).String(), Gateway: gw, DNS: cfg.Network.DNS, MTU: 1500},
		Report:   agentproto.Reporter{URL: "http://" + gw + ":8089" + agentproto.ReportPath, Token: "t"},
		Registry: pool.GuestRegistry(cfg, &cfg.Pools[0]),
		Runner: agentproto.Runner{
			Forge: "test", User: "runner", UID: 1000, GID: 1000, Home: "/home/runner",
			Command: []string{"/bin/sh", "-c", cacheProbe, "probe", caLine, mirrorAddr},
		},
	}
	dir := filepath.Join(work, "vm")
	os.MkdirAll(dir, 0o700)
	initrd := filepath.Join(dir, "initramfs.cpio")
	if err := initramfs.WriteVM(initrd, boot, agentCfg); err != nil {
		t.Fatal(err)
	}
	tap, mac := "facachevm", netplan.NewMAC()
	inNetns(t, ns, func() error {
		if err := br.AddTAP(tap); err != nil {
			return err
		}
		return rules.AddVM(netplan.VM{TAP: tap, MAC: mac, IP: guestIP})
	})
	accel, _ := qemu.DetectAccel(context.Background(), "qemu-system-x86_64", "/dev/kvm")
	driver := &qemu.Driver{Binary: "qemu-system-x86_64", Accel: accel}
	console := filepath.Join(dir, "console.log")
	var m vmm.Machine
	started := time.Now()
	inNetns(t, ns, func() error {
		m, err = driver.Start(context.Background(), vmm.Spec{
			ID: "cache-e2e", Dir: dir, Kernel: kernel, Initramfs: initrd, VCPUs: 1, MemoryMiB: 256,
			TAP: tap, MAC: mac, ConsoleLog: console,
		})
		return err
	})
	t.Cleanup(func() {
		_ = m.Kill(context.Background())
		if t.Failed() {
			b, _ := os.ReadFile(console)
			t.Logf("guest console:\n%s", b)
		}
	})

	// Meanwhile, the orchestrator pulls the image twice, each time into an
	// empty store, through the mirror.
	pull := func(store string) (time.Duration, string) {
		t.Helper()
		start := time.Now()
		out, err := ns.command(context.Background(), filepath.Join(bin, "fireactions"), "image", "pull", "--config", configFor(store), imageRef).CombinedOutput()
		if err != nil {
			t.Fatalf("fireactions image pull (%s): %v\n%s", store, err, out)
		}
		return time.Since(start), string(out)
	}
	took1, out1 := pull("images-1")
	first, mirrored1 := upstream.bytes.Load(), mirror.requests.Load()
	took2, out2 := pull("images-2")
	second, mirrored2 := upstream.bytes.Load()-first, mirror.requests.Load()-mirrored1
	for i, out := range []string{out1, out2} {
		if !strings.Contains(out, digest.String()) {
			t.Errorf("pull %d did not get %s:\n%s", i+1, digest, out)
		}
	}
	switch {
	case first < 4<<20:
		t.Errorf("the first pull took %d bytes from the upstream: the mirror did not fetch the image", first)
	case mirrored1 == 0 || mirrored2 == 0:
		t.Errorf("the mirror served %d and %d requests: the pulls bypassed it", mirrored1, mirrored2)
	case second != 0:
		t.Errorf("the second pull took %d bytes from the upstream, want 0", second)
	}
	t.Logf("FIGURE orchestrator pull 1: %s, %d bytes from the upstream; pull 2 (empty store): %s, %d bytes from the upstream, %d requests to the mirror",
		took1.Round(time.Millisecond), first, took2.Round(time.Millisecond), second, mirrored2)

	// The guest's view.
	waitFor(t, 4*time.Minute, "the guest's probe", func() bool {
		b, _ := os.ReadFile(console)
		return strings.Contains(string(b), "CACHE-DONE")
	})
	t.Logf("FIGURE guest booted and probed in %s", time.Since(started).Round(time.Millisecond))
	b, _ := os.ReadFile(console)
	text := string(b)
	for _, l := range regexp.MustCompile(`CACHE-(ENV|FILE|CA|MIRROR) .*`).FindAllString(text, -1) {
		t.Logf("guest: %s", strings.TrimSpace(l))
	}
	for _, want := range []string{
		"CACHE-ENV HTTP_PROXY=" + proxy, "CACHE-ENV http_proxy=" + proxy,
		"CACHE-ENV HTTPS_PROXY=http://10.215.0.1:3128", "CACHE-ENV https_proxy=http://10.215.0.1:3128",
		"CACHE-ENV NO_PROXY=localhost,127.0.0.1,::1,10.215.0.1", "CACHE-ENV no_proxy=localhost,127.0.0.1,::1,10.215.0.1",
		"CACHE-ENV NODE_EXTRA_CA_CERTS=/usr/local/share/ca-certificates/fireactions-cache.crt",
		`CACHE-LINE /etc/containerd/certs.d/docker.io/hosts.toml [host."http://10.215.0.1:5000"]`,
		`CACHE-LINE /etc/containerd/certs.d/ghcr.io/hosts.toml [host."http://10.215.0.1:5000/v2/ghcr.io"]`,
		`CACHE-LINE /etc/containerd/certs.d/` + upHost + `/hosts.toml server = "https://` + upHost + `"`,
		`CACHE-LINE /etc/docker/daemon.json     "http://10.215.0.1:5000"`,
		`CACHE-LINE /etc/buildkit/buildkitd.toml   mirrors = ["10.215.0.1:5000/ghcr.io"]`,
		`CACHE-LINE /etc/buildkit/buildkitd.toml [registry."10.215.0.1:5000"]`,
		"CACHE-CA trusted",
		"CACHE-MIRROR reachable",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("the guest's console lacks %q", want)
		}
	}
	if n := len(regexp.MustCompile(`(?m)CACHE-FILE /etc/containerd/certs.d/[^/]+/hosts.toml\s*$`).FindAllString(text, -1)); n != 3 {
		t.Errorf("the guest has %d hosts.toml files, want 3", n)
	}
	select {
	case <-m.Done():
	case <-time.After(time.Minute):
		t.Error("the guest did not power off after its runner")
	}
}

// testCA is a throwaway CA certificate, PEM.
func testCA(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "fireactions e2e cache CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
