//go:build nixcheck

package nixcheck

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"
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

// kernelFragments are the configuration fragments of the guest kernel.
var kernelFragments = []string{"guest.config", "guest-x86_64.config", "docker.config"}

// Every option the fragments set exists in Linux 6.1's Kconfig, and
// docker.config sets what Docker's bridge networking needs.
func TestKernelFragmentSymbolsExist(t *testing.T) {
	refPath, ref := referenceConfig(t)
	all := map[string]string{}
	for _, name := range kernelFragments {
		frag, err := kconfigSymbols(filepath.Join(root, "nix", "kernel", name))
		if err != nil {
			t.Fatal(err)
		}
		if unknown := unknownSymbols(frag, ref); len(unknown) > 0 {
			t.Errorf("nix/kernel/%s sets symbols %s does not know: %s", name, refPath, strings.Join(unknown, " "))
		}
		for k, v := range frag {
			if name == "docker.config" || all[k] == "" {
				all[k] = v
			}
		}
		if name == "docker.config" {
			for _, need := range []string{
				"CONFIG_IP_NF_RAW", "CONFIG_NETFILTER_XT_MATCH_CONNTRACK", "CONFIG_NETFILTER_XT_MATCH_ADDRTYPE",
				"CONFIG_IP_NF_NAT", "CONFIG_IP_NF_TARGET_MASQUERADE", "CONFIG_NF_CONNTRACK",
				"CONFIG_BRIDGE", "CONFIG_BRIDGE_NETFILTER", "CONFIG_VETH", "CONFIG_OVERLAY_FS",
				"CONFIG_CGROUPS", "CONFIG_MEMCG", "CONFIG_CGROUP_PIDS", "CONFIG_CGROUP_BPF",
				"CONFIG_NAMESPACES", "CONFIG_NET_NS", "CONFIG_PID_NS", "CONFIG_SECCOMP_FILTER", "CONFIG_NFT_COMPAT",
			} {
				if frag[need] != "y" {
					t.Errorf("docker.config does not build in %s (%q)", need, frag[need])
				}
			}
		}
	}
	// What the agent and the monitors rely on, built in (the agent loads
	// no module when a pool lists none).
	for need, want := range map[string]string{
		"CONFIG_MODULES": "n", "CONFIG_VIRTIO_MMIO": "y", "CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES": "y",
		"CONFIG_VIRTIO_PCI": "y", "CONFIG_VIRTIO_BLK": "y", "CONFIG_VIRTIO_NET": "y", "CONFIG_VIRTIO_CONSOLE": "y",
		"CONFIG_SERIAL_8250_CONSOLE": "y", "CONFIG_EXT4_FS": "y", "CONFIG_EROFS_FS": "y", "CONFIG_EROFS_FS_XATTR": "y",
		"CONFIG_OVERLAY_FS": "y", "CONFIG_TMPFS": "y", "CONFIG_DEVTMPFS": "y", "CONFIG_RD_GZIP": "y",
		"CONFIG_PVH": "y", "CONFIG_KVM_GUEST": "y", "CONFIG_SERIO_I8042": "y", "CONFIG_ACPI": "y",
	} {
		if all[need] != want {
			t.Errorf("the guest kernel's fragments set %s to %q, want %q", need, all[need], want)
		}
	}
	t.Logf("%d options, all known to %s", len(all), refPath)
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

// libExpr is a Nix expression for nixpkgs' lib: $NIXPKGS_LIB, else the
// snapshot in ../shared/nixpkgs-lib/lib.
func libExpr(t *testing.T) string {
	t.Helper()
	for _, p := range []string{os.Getenv("NIXPKGS_LIB"), filepath.Join(root, "..", "shared", "nixpkgs-lib", "lib")} {
		if p == "" {
			continue
		}
		if _, err := os.Stat(filepath.Join(p, "default.nix")); err == nil {
			return "(import " + p + ")"
		}
	}
	t.Fatal("no nixpkgs lib: set NIXPKGS_LIB or put the snapshot at ../shared/nixpkgs-lib/lib")
	return ""
}

// guestKernel is nix/packages/guest-kernel.nix evaluated for one
// architecture with stand-ins for nixpkgs' builders: what the derivation
// would run.
type guestKernel struct {
	KernelArch, ConfigScript, ConfigurePhase, BuildPhase, InstallPhase, Configfile, Version string
	QemuImage, FirecrackerImage                                                             string
	Fragments, Images, NativeBuildInputs                                                    []string
	Src                                                                                     string
}

func evalGuestKernel(t *testing.T) map[string]guestKernel {
	t.Helper()
	var out map[string]guestKernel
	eval(t, `let
	  lib = `+libExpr(t)+`;
	  forSystem = system: let
	    stdenv = {
	      hostPlatform = lib.systems.elaborate system;
	      mkDerivation = f: f { finalPackage = "/nix/store/00000000000000000000000000000000-guest-kernel"; };
	    };
	    k = import ./nix/packages/guest-kernel.nix {
	      inherit lib stdenv;
	      linux_6_1 = { src = "/linux-6.1.99.tar.xz"; version = "6.1.99"; };
	      flex = "flex"; bison = "bison"; perl = "perl"; bc = "bc"; elfutils = "elfutils"; openssl = "openssl";
	    };
	  in {
	    inherit (k) kernelArch configurePhase buildPhase installPhase version src nativeBuildInputs;
	    fragments = map toString k.fragments;
	    inherit (k.passthru) configScript images configfile qemuImage firecrackerImage;
	  };
	in { x86_64 = forSystem "x86_64-linux"; aarch64 = forSystem "aarch64-linux"; }`, &out)
	return out
}

// The guest kernel evaluates for both architectures: nixpkgs' 6.1 source,
// the fragments in order, the images each monitor boots, the
// configuration step inside the configure phase.
func TestKernelPackagesEvaluate(t *testing.T) {
	k := evalGuestKernel(t)
	x, a := k["x86_64"], k["aarch64"]
	frag := func(names ...string) string {
		var p []string
		for _, n := range names {
			p = append(p, filepath.Join(root, "nix", "kernel", n))
		}
		return strings.Join(p, " ")
	}
	for _, c := range []struct {
		what, got, want string
	}{
		{"x86_64 ARCH", x.KernelArch, "x86_64"},
		{"aarch64 ARCH", a.KernelArch, "arm64"},
		{"source", x.Src, "/linux-6.1.99.tar.xz"},
		{"version", x.Version, "6.1.99"},
		{"x86_64 fragments", strings.Join(x.Fragments, " "), frag("guest.config", "guest-x86_64.config", "docker.config")},
		{"aarch64 fragments", strings.Join(a.Fragments, " "), frag("guest.config", "docker.config")},
		{"x86_64 images", strings.Join(x.Images, " "), "vmlinux bzImage"},
		{"aarch64 images", strings.Join(a.Images, " "), "Image"},
		{"configfile", x.Configfile, "/nix/store/00000000000000000000000000000000-guest-kernel/config"},
		{"x86_64 QEMU image", x.QemuImage, "/nix/store/00000000000000000000000000000000-guest-kernel/bzImage"},
		{"x86_64 Firecracker image", x.FirecrackerImage, "/nix/store/00000000000000000000000000000000-guest-kernel/vmlinux"},
		{"aarch64 QEMU image", a.QemuImage, "/nix/store/00000000000000000000000000000000-guest-kernel/Image"},
		{"aarch64 Firecracker image", a.FirecrackerImage, "/nix/store/00000000000000000000000000000000-guest-kernel/Image"},
	} {
		if c.got != c.want {
			t.Errorf("%s: %q, want %q", c.what, c.got, c.want)
		}
	}
	for _, want := range []string{"make ARCH=\"$kernelArch\" defconfig", "merge_config.sh -m .config $fragments", "make ARCH=\"$kernelArch\" olddefconfig", "did not survive olddefconfig", `[ "$lost" = 0 ]`} {
		if !strings.Contains(x.ConfigScript, want) {
			t.Errorf("the configuration step lacks %q:\n%s", want, x.ConfigScript)
		}
	}
	if !strings.Contains(x.ConfigurePhase, x.ConfigScript) {
		t.Errorf("the configure phase does not run the configuration step:\n%s", x.ConfigurePhase)
	}
	for _, c := range []struct{ phase, want string }{
		{x.BuildPhase, "vmlinux bzImage"}, {a.BuildPhase, " Image"},
		{x.InstallPhase, "vmlinux $out/vmlinux"}, {x.InstallPhase, "arch/x86/boot/bzImage $out/bzImage"},
		{a.InstallPhase, "arch/arm64/boot/Image $out/Image"}, {x.InstallPhase, ".config $out/config"},
	} {
		if !strings.Contains(c.phase, c.want) {
			t.Errorf("%q missing from:\n%s", c.want, c.phase)
		}
	}
	if strings.Contains(a.InstallPhase, "bzImage") || strings.Contains(a.Images[0], "vmlinux") {
		t.Errorf("aarch64 installs x86 images:\n%s", a.InstallPhase)
	}
}

// kernelSource is Debian's Linux 6.1 source (linux-source-6.1), unpacked
// once into $FIREACTIONS_CACHE (default ~/.cache/fireactions) and reused.
func kernelSource(t *testing.T) string {
	t.Helper()
	cache := os.Getenv("FIREACTIONS_CACHE")
	if cache == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			t.Fatal(err)
		}
		cache = filepath.Join(home, ".cache", "fireactions")
	}
	dir := filepath.Join(cache, "linux-source-6.1")
	if _, err := os.Stat(filepath.Join(dir, "Makefile")); err == nil {
		return dir
	}
	const tarball = "/usr/src/linux-source-6.1.tar.xz"
	if _, err := os.Stat(tarball); err != nil {
		t.Fatalf("no %s: `make deps` installs linux-source-6.1 (%v)", tarball, err)
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		t.Fatal(err)
	}
	tmp, err := os.MkdirTemp(cache, "linux-source-6.1.tmp")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	if out, err := exec.Command("tar", "-xf", tarball, "-C", tmp).CombinedOutput(); err != nil {
		t.Fatalf("unpacking %s: %v\n%s", tarball, err, out)
	}
	if err := os.Rename(filepath.Join(tmp, "linux-source-6.1"), dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

// runKernelConfig runs the derivation's configuration step, as evaluated
// from nix/packages/guest-kernel.nix, in src with the given fragments,
// under bash with stdenv's -eu -o pipefail.
func runKernelConfig(t *testing.T, src, script, arch string, fragments []string) (string, error) {
	t.Helper()
	cmd := exec.Command("bash", "-eu", "-o", "pipefail", "-c", script)
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "kernelArch="+arch, "fragments="+strings.Join(fragments, " "))
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// The configuration step of the guest kernel, run here on Debian's 6.1
// source exactly as the derivation runs it: every fragment line survives
// `make olddefconfig`. And the step fails, naming the line, when one
// cannot survive.
func TestGuestKernelConfigSurvives(t *testing.T) {
	for _, tool := range []string{"make", "gcc", "flex", "bison", "bc"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed: `make deps` installs it", tool)
		}
	}
	k := evalGuestKernel(t)["x86_64"]
	start := time.Now()
	src := kernelSource(t)
	t.Logf("source %s ready in %s", src, time.Since(start).Round(time.Millisecond))

	start = time.Now()
	out, err := runKernelConfig(t, src, k.ConfigScript, k.KernelArch, k.Fragments)
	if err != nil {
		t.Fatalf("the guest kernel's configuration step failed: %v\n%s", err, lostLines(out))
	}
	got, err := kconfigSymbols(filepath.Join(src, ".config"))
	if err != nil {
		t.Fatal(err)
	}
	if _, on := got["CONFIG_MODULES"]; on && got["CONFIG_MODULES"] != "n" {
		t.Errorf("CONFIG_MODULES is %q", got["CONFIG_MODULES"])
	}
	t.Logf("configured in %s: %d symbols", time.Since(start).Round(time.Millisecond), len(got))

	// Positive control: a symbol Linux lacks, one whose dependency the
	// configuration does not meet, and an "is not set" Kconfig overrides.
	control := filepath.Join(t.TempDir(), "control.config")
	os.WriteFile(control, []byte("CONFIG_VIRTIO_BLK=y\nCONFIG_NO_SUCH_OPTION=y\nCONFIG_KVM_AMD_SEV=y\n# CONFIG_TTY is not set\n"), 0o644)
	out, err = runKernelConfig(t, src, k.ConfigScript, k.KernelArch, append(k.Fragments, control))
	if err == nil {
		t.Fatalf("a fragment whose lines cannot survive passed:\n%s", out)
	}
	for _, want := range []string{
		"nix/kernel/control.config: CONFIG_NO_SUCH_OPTION=y did not survive",
		"nix/kernel/control.config: CONFIG_KVM_AMD_SEV=y did not survive",
		"nix/kernel/control.config: # CONFIG_TTY is not set did not survive",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the failing step does not say %q:\n%s", want, lostLines(out))
		}
	}
	if strings.Contains(out, "CONFIG_VIRTIO_BLK=y did not survive") {
		t.Errorf("a surviving line reported lost:\n%s", lostLines(out))
	}
}

// lostLines keeps the step's complaints and its last lines.
func lostLines(out string) string {
	var keep []string
	lines := strings.Split(strings.TrimSpace(out), "\n")
	for i, l := range lines {
		if strings.Contains(l, "did not survive") || i >= len(lines)-5 {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}
