package agent

import (
	"bytes"
	"context"
	"flag"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
	"github.com/nixos-fireactions/nixos-fireactions/internal/hosttest"
)

var update = flag.Bool("update", false, "rewrite testdata/golden from what the agent writes")

// Values with every kind of '$' a shell or os.ExpandEnv would eat.
const (
	proxyWithDollars   = "http://ci:pa$$w0rd@10.200.0.1:3128"
	httpsProxyDollars  = "http://ci:$HOME${USER}@10.200.0.1:3128"
	noProxyWithDollars = "localhost,127.0.0.1,10.200.0.1,.corp$internal"
	mirrorWithDollars  = "http://10.200.0.1:5000/quay$cache"
)

// registryConfig is testConfig with the host's registry cache: mirrors
// of three registries (with and without a prefix), a proxy and its CA.
func registryConfig(t *testing.T, url string) agentproto.Config {
	ca, err := os.ReadFile("testdata/cache-ca.pem")
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(url)
	cfg.Runner.Command = []string{"sh", "-c", `env | grep -E '^(HTTPS?_PROXY|NO_PROXY|https?_proxy|no_proxy|NODE_EXTRA_CA_CERTS)=' | LC_ALL=C sort > runner-env.txt
echo "Runner: listening for jobs"`}
	cfg.Registry = &agentproto.Registry{
		Mirrors: map[string][]string{
			"docker.io": {"http://10.200.0.1:5000", "https://mirror.example.com/dockerhub"},
			"ghcr.io":   {"http://10.200.0.1:5000/ghcr.io"},
			"quay.io":   {mirrorWithDollars},
		},
		HTTPProxy:  proxyWithDollars,
		HTTPSProxy: httpsProxyDollars,
		NoProxy:    noProxyWithDollars,
		CA:         ca,
	}
	return cfg
}

// bootRegistry boots a guest with cfg in a fresh root, after prepare
// has added the image's files, and returns the root and the console.
func bootRegistry(t *testing.T, cfg agentproto.Config, prepare func(root string)) (string, *fakeSys, *hosttest.SyncBuffer) {
	t.Helper()
	host := newHostServer(t, "vm-token")
	cfg.Report.URL = host.URL
	root := newTestRoot(t, cfg)
	if prepare != nil {
		prepare(root)
	}
	sys := newFakeSys(t, root)
	con := &hosttest.SyncBuffer{}
	a := &Agent{Root: root, Sys: sys, Console: con}
	a.Boot(context.Background())
	return root, sys, con
}

// goldenDirs are the guest directories whose every file the golden tree
// holds.
var goldenDirs = []string{"etc/containerd", "etc/buildkit", "etc/docker", "etc/ssl", "usr/local/share/ca-certificates", "home/runner/work"}

// The files written into the guest for mirrors, a proxy and a CA are the
// golden files (testdata/golden/registry; go test -run Golden -update
// rewrites them), nothing more, and the runner's environment holds the
// proxy.
func TestRegistryFilesMatchGolden(t *testing.T) {
	cfg := registryConfig(t, "")
	root, _, con := bootRegistry(t, cfg, func(root string) {
		// A Debian-like image: a bundle to append to.
		must(t, os.MkdirAll(filepath.Join(root, "etc/ssl/certs"), 0o755))
		must(t, os.WriteFile(filepath.Join(root, "etc/ssl/certs/ca-certificates.crt"), []byte("# the image's bundle\n"), 0o644))
	})
	if !strings.Contains(con.String(), "listening for jobs") {
		t.Fatalf("the runner did not run:\n%s", con)
	}
	golden := filepath.Join("testdata", "golden", "registry")
	got := map[string][]byte{}
	for _, d := range goldenDirs {
		filepath.WalkDir(filepath.Join(root, d), func(p string, e fs.DirEntry, err error) error {
			if err == nil && e.Type().IsRegular() {
				rel, _ := filepath.Rel(root, p)
				got[filepath.ToSlash(rel)], _ = os.ReadFile(p)
			}
			return nil
		})
	}
	if *update {
		must(t, os.RemoveAll(golden))
		for rel, b := range got {
			must(t, os.MkdirAll(filepath.Dir(filepath.Join(golden, rel)), 0o755))
			must(t, os.WriteFile(filepath.Join(golden, rel), b, 0o644))
		}
		return
	}
	want := map[string][]byte{}
	filepath.WalkDir(golden, func(p string, e fs.DirEntry, err error) error {
		if err == nil && e.Type().IsRegular() {
			rel, _ := filepath.Rel(golden, p)
			want[filepath.ToSlash(rel)], _ = os.ReadFile(p)
		}
		return nil
	})
	if len(want) == 0 {
		t.Fatal("no golden files; run go test ./guest/agent -run Golden -update")
	}
	for _, rel := range slices.Sorted(mapKeys(want, got)) {
		switch g, w := got[rel], want[rel]; {
		case g == nil:
			t.Errorf("%s: not written", rel)
		case w == nil:
			t.Errorf("%s: written, but not in the golden files:\n%s", rel, g)
		case !bytes.Equal(g, w):
			t.Errorf("%s differs from the golden file:\n%s\nwant:\n%s", rel, g, w)
		}
	}
}

func mapKeys(ms ...map[string][]byte) func(func(string) bool) {
	return func(yield func(string) bool) {
		seen := map[string]bool{}
		for _, m := range ms {
			for k := range m {
				if !seen[k] {
					seen[k] = true
					if !yield(k) {
						return
					}
				}
			}
		}
	}
}

// Every '$' of the values reaches the files and the runner's environment
// as it was.
func TestRegistryValuesKeepDollarSigns(t *testing.T) {
	cfg := registryConfig(t, "")
	root, _, con := bootRegistry(t, cfg, nil)
	env := readFile(t, filepath.Join(root, "home/runner/work/runner-env.txt"))
	for _, want := range []string{
		"HTTP_PROXY=" + proxyWithDollars, "http_proxy=" + proxyWithDollars,
		"HTTPS_PROXY=" + httpsProxyDollars, "https_proxy=" + httpsProxyDollars,
		"NO_PROXY=" + noProxyWithDollars, "no_proxy=" + noProxyWithDollars,
	} {
		if !strings.Contains(env, want+"\n") {
			t.Errorf("the runner's environment lacks %s:\n%s", want, env)
		}
	}
	quay := readFile(t, filepath.Join(root, "etc/containerd/certs.d/quay.io/hosts.toml"))
	if !strings.Contains(quay, `[host."http://10.200.0.1:5000/v2/quay$cache"]`) {
		t.Errorf("quay.io's hosts.toml lost the '$':\n%s", quay)
	}
	if bk := readFile(t, filepath.Join(root, buildkitConfigPath)); !strings.Contains(bk, `"10.200.0.1:5000/quay$cache"`) {
		t.Errorf("buildkitd.toml lost the '$':\n%s", bk)
	}
	if strings.Contains(con.String(), "pa$$w0rd") || strings.Contains(con.String(), "$HOME${USER}") {
		t.Errorf("the console shows the proxy's credentials:\n%s", con)
	}
}

// The runner's own environment wins over the cache's proxy.
func TestRunnerEnvOverridesTheProxy(t *testing.T) {
	env := withRegistryEnv([]string{"HTTP_PROXY=http://own:1", "no_proxy=own"}, &agentproto.Registry{HTTPProxy: "http://cache:3128", NoProxy: "x"})
	want := []string{"HTTP_PROXY=http://own:1", "no_proxy=own", "http_proxy=http://cache:3128", "NO_PROXY=x"}
	if !slices.Equal(env, want) {
		t.Fatalf("env %q, want %q", env, want)
	}
}

// A Fedora-like bundle behind absolute symbolic links, inside the guest's
// root, gets the CA appended at its target, once; the links stay.
func TestCAIsAppendedThroughLinksOnce(t *testing.T) {
	ca, err := os.ReadFile("testdata/cache-ca.pem")
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	target := filepath.Join(root, "etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem")
	must(t, os.MkdirAll(filepath.Dir(target), 0o755))
	must(t, os.WriteFile(target, []byte("# bundle without final newline"), 0o644))
	must(t, os.MkdirAll(filepath.Join(root, "etc/pki/tls/certs"), 0o755))
	must(t, os.Symlink("/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem", filepath.Join(root, "etc/pki/tls/certs/ca-bundle.crt")))
	a := &Agent{Root: root, Sys: newFakeSys(t, root)}
	for i := 0; i < 2; i++ {
		must(t, a.trustCA(ca))
	}
	got := readFile(t, target)
	if want := "# bundle without final newline\n" + string(bytes.TrimSpace(ca)) + "\n"; got != want {
		t.Fatalf("bundle:\n%s\nwant:\n%s", got, want)
	}
	if fi, err := os.Lstat(filepath.Join(root, "etc/pki/tls/certs/ca-bundle.crt")); err != nil || fi.Mode()&fs.ModeSymlink == 0 {
		t.Fatalf("the link was replaced: %v %v", fi, err)
	}
	if _, err := os.Stat(filepath.Join(root, caBundles[0])); err == nil {
		t.Fatal("a bundle was created although the guest has one")
	}
}

// A guest without any bundle (a busybox root) gets one with the CA; what
// is not a certificate is refused before anything is written.
func TestCABundleCreatedAndBadCARefused(t *testing.T) {
	ca, _ := os.ReadFile("testdata/cache-ca.pem")
	root := t.TempDir()
	a := &Agent{Root: root, Sys: newFakeSys(t, root)}
	must(t, a.trustCA(ca))
	if got := readFile(t, filepath.Join(root, caBundles[0])); got != string(bytes.TrimSpace(ca))+"\n" {
		t.Fatalf("created bundle:\n%s", got)
	}
	bad := t.TempDir()
	b := &Agent{Root: bad, Sys: newFakeSys(t, bad)}
	for _, pemText := range []string{"", "not pem", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", string(ca) + "trailing junk"} {
		if err := b.trustCA([]byte(pemText)); err == nil {
			t.Errorf("CA %q accepted", pemText)
		}
	}
	if _, err := os.Stat(filepath.Join(bad, cacheCAPath)); err == nil {
		t.Error("a refused CA was written")
	}
}
