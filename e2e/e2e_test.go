//go:build e2e

// Package e2e runs the orchestrator for real: a Gitea built from source in
// a private network namespace, QEMU microVM guests (TCG where KVM cannot
// run them), the real runner agent in the guests. Run with -tags e2e as
// root; `make test` provides everything it needs.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/guestroot"
	"github.com/nixos-fireactions/nixos-fireactions/internal/hosttest"
	"github.com/nixos-fireactions/nixos-fireactions/vmstate"
)

// cacheDir is where scripts/build-peers.sh put Gitea and its runner.
func cacheDir() string {
	if d := os.Getenv("FIREACTIONS_CACHE"); d != "" {
		return d
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".cache", "fireactions")
}

// hostKernel finds the Debian cloud kernel and its module tree.
func hostKernel(t *testing.T) (kernel, modules string) {
	t.Helper()
	ks, _ := filepath.Glob("/boot/vmlinuz-*-cloud-amd64")
	if len(ks) == 0 {
		t.Fatal("no /boot/vmlinuz-*-cloud-amd64 (make test installs linux-image-cloud-amd64)")
	}
	kernel = ks[len(ks)-1]
	modules = "/lib/modules/" + strings.TrimPrefix(filepath.Base(kernel), "vmlinuz-")
	requireFile(t, modules+"/modules.dep", "kernel modules")
	return kernel, modules
}

// buildBinaries builds the orchestrator and the static guest agent.
func buildBinaries(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, c := range []struct{ pkg, out string }{
		{"../cmd/fireactions", "fireactions"},
		{"../cmd/fireactions-agent", "fireactions-agent"},
	} {
		cmd := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(dir, c.out), c.pkg)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", c.pkg, err, out)
		}
	}
	return dir
}

// umaskMu serialises the tests' changes of the process's umask.
var umaskMu sync.Mutex

// orchestrator is a running `fireactions serve`.
type orchestrator struct {
	cmd     *exec.Cmd
	log     string
	state   string
	exited  chan struct{}
	exitErr error
}

func startOrchestrator(t *testing.T, ns *testNetns, bin, config, state string) *orchestrator {
	t.Helper()
	logPath := filepath.Join(filepath.Dir(config), "fireactions.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := ns.command(context.Background(), filepath.Join(bin, "fireactions"), "serve", config)
	return launchOrchestrator(t, cmd, logf, state, -1)
}

// launchOrchestrator starts cmd, a `serve` however wrapped, logging to
// logf, with the file mode creation mask umask (-1: the test's own), and
// ends it and the VMs under state when the test ends.
func launchOrchestrator(t *testing.T, cmd *exec.Cmd, logf *os.File, state string, umask int) *orchestrator {
	t.Helper()
	logPath := logf.Name()
	cmd.Stdout, cmd.Stderr = logf, logf
	// The mask is the process's: set around the fork only, which the
	// child inherits (os/exec has no per-command umask).
	var err error
	if umask >= 0 {
		umaskMu.Lock()
		old := syscall.Umask(umask)
		err = cmd.Start()
		syscall.Umask(old)
		umaskMu.Unlock()
	} else {
		err = cmd.Start()
	}
	if err != nil {
		t.Fatalf("start fireactions: %v", err)
	}
	o := &orchestrator{cmd: cmd, log: logPath, state: state, exited: make(chan struct{})}
	go func() { o.exitErr = cmd.Wait(); logf.Close(); close(o.exited) }()
	t.Cleanup(func() {
		select {
		case <-o.exited:
		default:
			_ = cmd.Process.Kill()
			<-o.exited
		}
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("fireactions log:\n%s", b)
			dumpConsoles(t, state)
		}
		// A test that failed before its drain leaves VMs running; they
		// would load the machine for the tests after it.
		for pid := range qemuUnder(state) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	return o
}

// waitFor waits like the package's waitFor, but fails at once when the
// orchestrator has exited.
func (o *orchestrator) waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	waitFor(t, within, what, func() bool {
		select {
		case <-o.exited:
			t.Fatalf("fireactions exited (%v) while waiting for %s", o.exitErr, what)
		default:
		}
		return cond()
	})
}

// waitVM waits for a VM of the orchestrator in phase, and returns its id.
func (o *orchestrator) waitVM(t *testing.T, within time.Duration, what, phase string) string {
	t.Helper()
	var vm string
	o.waitFor(t, within, what, func() bool {
		for id, p := range vmDirs(o.state) {
			if p == phase {
				vm = id
				return true
			}
		}
		return false
	})
	return vm
}

func dumpConsoles(t *testing.T, state string) {
	logs, _ := filepath.Glob(filepath.Join(state, "logs", "*.log"))
	logs2, _ := filepath.Glob(filepath.Join(state, "vms", "*", "console.log"))
	for _, l := range append(logs, logs2...) {
		b, _ := os.ReadFile(l)
		if len(b) > 6000 {
			b = b[len(b)-6000:]
		}
		t.Logf("console %s:\n%s", l, b)
	}
}

// vmDirs lists the VMs of the state directory, each with the phase in
// its record ("" for a VM directory without one): the records read from
// the store's log (read only, as the running orchestrator writes it),
// and the per-VM directories.
func vmDirs(state string) map[string]string {
	out := map[string]string{}
	dirs, _ := filepath.Glob(filepath.Join(state, "vms", "*"))
	for _, d := range dirs {
		if fi, err := os.Stat(d); err == nil && fi.IsDir() && vmstate.ValidID(filepath.Base(d)) {
			out[filepath.Base(d)] = ""
		}
	}
	recs, _ := vmstate.ReadRecords(filepath.Join(state, "vms"))
	for _, r := range recs {
		out[r.ID] = string(r.Phase)
	}
	return out
}

func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// qemuProcesses lists running QEMU processes started for fireactions VMs.
func qemuProcesses() []string { return qemuProcessesUnder("") }

// qemuProcessesUnder lists the fireactions QEMU processes whose VM files
// are under state (other tests on the machine have their own).
func qemuProcessesUnder(state string) []string {
	var out []string
	for _, cmdline := range qemuUnder(state) {
		out = append(out, cmdline)
	}
	return out
}

// qemuUnder is the command line of every QEMU process of the VMs under
// state, by pid.
func qemuUnder(state string) map[int]string {
	out := map[int]string{}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err == nil && bytes.Contains(b, []byte("fireactions-")) && bytes.Contains(b, []byte("qemu")) &&
			bytes.Contains(b, []byte(state)) {
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
			out[pid] = strings.ReplaceAll(string(b), "\x00", " ")
		}
	}
	return out
}

// logLines returns the orchestrator log lines matching re.
func logLines(path string, re *regexp.Regexp) []string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		if re.MatchString(s.Text()) {
			out = append(out, s.Text())
		}
	}
	return out
}

func buildGuestRoot(t *testing.T, cache, dst string) {
	t.Helper()
	runner := filepath.Join(cache, "runner-v1.0.8", "act_runner")
	requireFile(t, runner, "Gitea runner build (scripts/build-peers.sh)")
	if err := guestroot.Build(context.Background(), guestroot.DefaultSpec(runner, "/bin/act_runner"), dst); err != nil {
		t.Fatal(err)
	}
}

// requireRoot: every end-to-end test needs root, for one reason.
func requireRoot(t *testing.T) {
	t.Helper()
	hosttest.RequireRoot(t, "the end-to-end tests make network namespaces, TAPs and nftables rules")
}

var _ = fmt.Sprintf

func regexpMust(s string) *regexp.Regexp { return regexp.MustCompile(s) }

// assertNothingLeft checks the end state after a drain: no runner at the
// forge, no QEMU, no TAP, no VM directory, no nftables table.
func assertNothingLeft(t *testing.T, ns *testNetns, gitea *giteaServer, state, bridge string) {
	t.Helper()
	if n := gitea.runnerCount(); n != 0 {
		t.Errorf("Gitea lists %d runners after the drain", n)
	}
	if ps := qemuProcessesUnder(state + "/"); len(ps) != 0 {
		t.Errorf("QEMU processes left: %v", ps)
	}
	for _, l := range ns.links(t) {
		if strings.HasPrefix(l, "fa") && l != bridge {
			t.Errorf("TAP left: %s", l)
		}
	}
	if left := vmDirs(state); len(left) != 0 {
		t.Errorf("VM directories left: %v", left)
	}
	if out := run(t, "ip", "netns", "exec", ns.name, "nft", "list", "tables"); strings.Contains(out, "fireactions_") {
		t.Errorf("nftables table left after a clean shutdown: %s", out)
	}
}

// terminate sends SIGTERM: the drain starts.
func (o *orchestrator) terminate(t *testing.T) {
	t.Helper()
	if err := o.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
}

// waitExit waits for the orchestrator to exit, which must be with status 0
// (a drain that did not have to force).
func (o *orchestrator) waitExit(t *testing.T, within time.Duration) {
	t.Helper()
	select {
	case <-o.exited:
	case <-time.After(within):
		t.Fatalf("fireactions did not exit within %s of SIGTERM", within)
	}
	if o.exitErr != nil {
		t.Fatalf("fireactions exited with %v after the drain", o.exitErr)
	}
}
