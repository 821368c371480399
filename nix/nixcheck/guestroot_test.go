//go:build nixcheck

package nixcheck

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// guestRootDrv is nix/packages/guest-root.nix evaluated with stand-ins:
// closureInfo and the packages are directories given by the test (their
// outPath), runCommand returns what it is given.
type guestRootDrv struct {
	Name, Script, RunnerPath string
	RootPaths                []string
}

func evalGuestRoot(t *testing.T, fireactions, runner, closure, busybox, bash, runnerBin string) guestRootDrv {
	t.Helper()
	q := func(s string) string { b, _ := json.Marshal(s); return string(b) }
	var d guestRootDrv
	eval(t, `let
	  pkg = name: path: { inherit name; outPath = path; };
	  runner = pkg "fake-runner-1.0" `+q(runner)+`;
	  g = import ./nix/packages/guest-root.nix {
	    lib = `+libExpr(t)+`;
	    runCommand = name: env: script: env // { inherit name script; };
	    closureInfo = { rootPaths }: { outPath = `+q(closure)+`; inherit rootPaths; };
	    pkgsStatic = { busybox = pkg "busybox" `+q(busybox)+`; bash = pkg "bash" `+q(bash)+`; };
	    fireactions = pkg "fireactions" `+q(fireactions)+`;
	    inherit runner;
	    runnerBin = `+q(runnerBin)+`;
	  };
	in {
	  inherit (g) name script;
	  runnerPath = g.passthru.runnerPath;
	  rootPaths = map (p: p.outPath) g.passthru.closure.rootPaths;
	}`, &d)
	return d
}

// The derivation's shape: the runner's closure from closureInfo, the
// static busybox and bash, the runner linked at /bin/<runnerBin>.
func TestGuestRootEvaluates(t *testing.T) {
	d := evalGuestRoot(t, "/fa", "/nix/store/aaaa-runner", "/ci", "/bb", "/bash", "gitea-runner")
	if d.Name != "guest-root-fake-runner-1.0" || d.RunnerPath != "/bin/gitea-runner" {
		t.Errorf("name %q, runner path %q", d.Name, d.RunnerPath)
	}
	if strings.Join(d.RootPaths, " ") != "/nix/store/aaaa-runner" {
		t.Errorf("closureInfo of %v, want the runner", d.RootPaths)
	}
	for _, want := range []string{
		"/fa/bin/fireactions guest-root", "--busybox /bb/bin/busybox", "--bash /bash/bin/bash",
		"--closure /ci/store-paths", "--runner-link /nix/store/aaaa-runner/bin/gitea-runner",
		"--runner-path /bin/gitea-runner", "--out $out/root.cpio.gz",
	} {
		if !strings.Contains(d.Script, want) {
			t.Errorf("the build script lacks %q:\n%s", want, d.Script)
		}
	}
}

// The derivation's build script, run here as the derivation runs it,
// with a fake runner store path and closure: the archive holds busybox,
// bash, the closure under its own paths and the runner's symlink; and a
// runnerBin the runner lacks fails the build naming it.
func TestGuestRootBuilds(t *testing.T) {
	for _, f := range []string{"/bin/busybox", "/bin/bash-static"} {
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("%s: `make deps` installs busybox-static and bash-static", f)
		}
	}
	tmp := t.TempDir()
	mk := func(p string, mode os.FileMode, data string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), mode); err != nil {
			t.Fatal(err)
		}
	}
	link := func(target, p string) {
		t.Helper()
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
	}
	// The packages: fireactions built from this tree, busybox and bash
	// from Debian, a runner linked against a "library" store path.
	fa := filepath.Join(tmp, "fireactions")
	build := exec.Command("go", "build", "-o", filepath.Join(fa, "bin", "fireactions"), "./cmd/fireactions")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/fireactions: %v\n%s", err, out)
	}
	link("/bin/busybox", filepath.Join(tmp, "busybox", "bin", "busybox"))
	link("/bin/bash-static", filepath.Join(tmp, "bash", "bin", "bash"))
	store := filepath.Join(tmp, "store")
	runner := filepath.Join(store, "aaaa-runner")
	libp := filepath.Join(store, "bbbb-glibc")
	mk(filepath.Join(runner, "bin", "act_runner"), 0o555, "#!/bin/sh\necho act_runner\n")
	mk(filepath.Join(libp, "lib", "libc.so.6"), 0o444, "ELF")
	link(filepath.Join(libp, "lib", "libc.so.6"), filepath.Join(runner, "lib", "libc.so.6"))
	ci := filepath.Join(tmp, "closure-info")
	mk(filepath.Join(ci, "store-paths"), 0o444, libp+"\n"+runner+"\n")

	d := evalGuestRoot(t, fa, runner, ci, filepath.Join(tmp, "busybox"), filepath.Join(tmp, "bash"), "act_runner")
	out := filepath.Join(tmp, "out")
	run := func(script string) (string, error) {
		cmd := exec.Command("bash", "-eu", "-o", "pipefail", "-c", script)
		cmd.Dir = tmp
		cmd.Env = append(os.Environ(), "out="+out)
		b, err := cmd.CombinedOutput()
		return string(b), err
	}
	if msg, err := run(d.Script); err != nil {
		t.Fatalf("the guest-root build script failed: %v\n%s\n%s", err, msg, d.Script)
	}
	dir := filepath.Join(tmp, "unpacked")
	os.MkdirAll(dir, 0o755)
	x := exec.Command("sh", "-c", "gzip -dc "+filepath.Join(out, "root.cpio.gz")+" | cpio -idm --quiet")
	x.Dir = dir
	if msg, err := x.CombinedOutput(); err != nil {
		t.Fatalf("unpacking the archive: %v\n%s", err, msg)
	}
	in := func(p string) string { return filepath.Join(dir, p) }
	if got, err := os.Readlink(in("/bin/act_runner")); err != nil || got != filepath.Join(runner, "bin", "act_runner") {
		t.Errorf("/bin/act_runner links to %q (%v)", got, err)
	}
	if got, err := os.Readlink(in(filepath.Join(runner, "lib", "libc.so.6"))); err != nil || got != filepath.Join(libp, "lib", "libc.so.6") {
		t.Errorf("the runner's library link is %q (%v)", got, err)
	}
	for p, mode := range map[string]os.FileMode{
		filepath.Join(runner, "bin", "act_runner"): 0o555, filepath.Join(libp, "lib", "libc.so.6"): 0o444,
		"/bin/busybox": 0o755, "/bin/bash": 0o755,
	} {
		if fi, err := os.Lstat(in(p)); err != nil || fi.Mode() != mode {
			t.Errorf("%s: %v %v, want mode %v", p, fi, err, mode)
		}
	}
	if got, err := os.Readlink(in("/bin/sh")); err != nil || got != "busybox" {
		t.Errorf("/bin/sh links to %q (%v)", got, err)
	}
	// The runner, through its link, runs in the unpacked root.
	if msg, err := exec.Command("chroot", dir, "/bin/sh", "-c", "/bin/busybox true && test -L /bin/act_runner").CombinedOutput(); err != nil {
		t.Errorf("the unpacked root does not run its busybox: %v\n%s", err, msg)
	}

	bad := evalGuestRoot(t, fa, runner, ci, filepath.Join(tmp, "busybox"), filepath.Join(tmp, "bash"), "gitea-runner")
	msg, err := run(bad.Script)
	if err == nil || !strings.Contains(msg, runner+" has no executable bin/gitea-runner") {
		t.Errorf("a runnerBin the runner lacks: %v\n%s", err, msg)
	}
}
