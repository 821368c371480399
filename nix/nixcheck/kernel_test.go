//go:build nixcheck

package nixcheck

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
)

var (
	kconfigSet   = regexp.MustCompile(`^(CONFIG_[A-Za-z0-9_]+)=(.+)$`)
	kconfigUnset = regexp.MustCompile(`^# (CONFIG_[A-Za-z0-9_]+) is not set$`)
)

// kconfigSymbols reads a .config or a fragment: the symbols it sets (or
// unsets), by name. A line that is none of those, a comment or blank is
// an error, and so is a symbol set twice.
func kconfigSymbols(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	syms := map[string]string{}
	s := bufio.NewScanner(f)
	for n := 1; s.Scan(); n++ {
		line := strings.TrimSpace(s.Text())
		var name, value string
		if m := kconfigSet.FindStringSubmatch(line); m != nil {
			name, value = m[1], m[2]
		} else if m := kconfigUnset.FindStringSubmatch(line); m != nil {
			name, value = m[1], "n"
		} else if line == "" || strings.HasPrefix(line, "#") {
			continue
		} else {
			return nil, fmt.Errorf("%s:%d: not a Kconfig line: %q", path, n, line)
		}
		if _, dup := syms[name]; dup {
			return nil, fmt.Errorf("%s:%d: %s is set twice", path, n, name)
		}
		syms[name] = value
	}
	return syms, s.Err()
}

// unknownSymbols are the fragment's symbols the reference configuration
// does not know.
func unknownSymbols(fragment, reference map[string]string) []string {
	var out []string
	for name := range fragment {
		if _, ok := reference[name]; !ok {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

// referenceConfig is the Debian cloud kernel's 6.1 configuration:
// Kconfig writes every symbol whose dependencies its architecture can
// meet, set or "is not set".
func referenceConfig(t *testing.T) (string, map[string]string) {
	t.Helper()
	paths, _ := filepath.Glob("/boot/config-6.1.*-cloud-amd64")
	if len(paths) == 0 {
		t.Fatal("no /boot/config-6.1.*-cloud-amd64: `make deps` installs linux-image-cloud-amd64")
	}
	ref, err := kconfigSymbols(paths[len(paths)-1])
	if err != nil {
		t.Fatal(err)
	}
	if len(ref) < 3000 {
		t.Fatalf("%s holds only %d symbols", paths[len(paths)-1], len(ref))
	}
	return paths[len(paths)-1], ref
}

// Every option nix/kernel/docker.config sets exists in Linux 6.1's
// Kconfig, and the fragment sets what Docker's bridge networking needs.
func TestKernelFragmentSymbolsExist(t *testing.T) {
	refPath, ref := referenceConfig(t)
	frag, err := kconfigSymbols(filepath.Join(root, "nix", "kernel", "docker.config"))
	if err != nil {
		t.Fatal(err)
	}
	if unknown := unknownSymbols(frag, ref); len(unknown) > 0 {
		t.Fatalf("nix/kernel/docker.config sets symbols %s does not know: %s", refPath, strings.Join(unknown, " "))
	}
	for _, need := range []string{
		"CONFIG_IP_NF_RAW", "CONFIG_NETFILTER_XT_MATCH_CONNTRACK", "CONFIG_NETFILTER_XT_MATCH_ADDRTYPE",
		"CONFIG_IP_NF_NAT", "CONFIG_IP_NF_TARGET_MASQUERADE", "CONFIG_NF_CONNTRACK",
		"CONFIG_BRIDGE", "CONFIG_BRIDGE_NETFILTER", "CONFIG_VETH", "CONFIG_OVERLAY_FS",
		"CONFIG_CGROUPS", "CONFIG_MEMCG", "CONFIG_CGROUP_PIDS", "CONFIG_CGROUP_BPF",
		"CONFIG_NAMESPACES", "CONFIG_NET_NS", "CONFIG_PID_NS", "CONFIG_SECCOMP_FILTER", "CONFIG_NFT_COMPAT",
	} {
		if frag[need] != "y" {
			t.Errorf("the fragment does not build in %s (%q)", need, frag[need])
		}
	}
	t.Logf("%d options, all known to %s", len(frag), refPath)
}

// The check notices a symbol Linux does not have, and a malformed line.
func TestKernelFragmentCheckFails(t *testing.T) {
	_, ref := referenceConfig(t)
	dir := t.TempDir()
	bogus := filepath.Join(dir, "bogus.config")
	os.WriteFile(bogus, []byte("CONFIG_VETH=y\nCONFIG_DOCKER_MAGIC=y\n# CONFIG_NO_SUCH_THING is not set\n"), 0o644)
	frag, err := kconfigSymbols(bogus)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(unknownSymbols(frag, ref), " "); got != "CONFIG_DOCKER_MAGIC CONFIG_NO_SUCH_THING" {
		t.Fatalf("unknown symbols %q", got)
	}
	for _, text := range []string{"VETH=y\n", "CONFIG_VETH=y\nCONFIG_VETH=m\n"} {
		os.WriteFile(bogus, []byte(text), 0o644)
		if _, err := kconfigSymbols(bogus); err == nil {
			t.Errorf("%q accepted", text)
		}
	}
}

// The kernel packages evaluate, with stand-ins for nixpkgs' builders
// that return what they are given: the CI kernel's URL is pinned, its
// hash an explicit placeholder, and the custom kernel's configuration
// step merges the fragment and fails on a dropped option.
func TestKernelPackagesEvaluate(t *testing.T) {
	var p struct {
		Upstream struct {
			URL, Hash string
		}
		Custom struct {
			BuildPhase string
		}
	}
	eval(t, `let
	  fake = "sha256-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
	  drv = name: a: a // { outPath = "/nix/store/00000000000000000000000000000000-" + name; inherit name; };
	  lib = { fakeHash = fake; licenses.gpl2Only = "gpl2"; sourceTypes.binaryNativeCode = "bin"; };
	  platform = { parsed.cpu.name = "x86_64"; linuxArch = "x86_64"; };
	  fetchurl = a: drv "fetched" a;
	  stdenv = { hostPlatform = platform; mkDerivation = a: drv (a.name or a.pname) a; };
	  up = import ./nix/packages/firecracker-kernel.nix { inherit lib fetchurl; stdenvNoCC = stdenv; };
	  linux_6_1 = drv "linux" { src = "/src"; version = "6.1.99"; modDirVersion = "6.1.99"; };
	  custom = import ./nix/packages/firecracker-kernel-custom.nix {
	    inherit lib stdenv fetchurl linux_6_1;
	    runCommand = name: env: script: drv name (env // { inherit script; });
	    linuxManualConfig = a: drv "kernel" (a // { dev = "/dev-out"; meta = { }; });
	    flex = "flex"; bison = "bison"; perl = "perl"; bc = "bc";
	  };
	in {
	  upstream = { url = up.src.url; hash = up.src.hash; };
	  custom = { buildPhase = custom.passthru.configfile.buildPhase; };
	}`, &p)
	if p.Upstream.URL != "https://s3.amazonaws.com/spec.ccfc.min/firecracker-ci/v1.10/x86_64/vmlinux-6.1.102" || !strings.HasPrefix(p.Upstream.Hash, "sha256-AAAA") {
		t.Errorf("firecracker-kernel fetches %s with hash %s", p.Upstream.URL, p.Upstream.Hash)
	}
	for _, want := range []string{"merge_config.sh -m .config", "docker.config", "make ARCH=x86_64 olddefconfig", "did not survive olddefconfig", `[ "$lost" = 0 ]`} {
		if !strings.Contains(p.Custom.BuildPhase, want) {
			t.Errorf("the custom kernel's configuration step lacks %q:\n%s", want, p.Custom.BuildPhase)
		}
	}
}
