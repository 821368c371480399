package agent

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
	"github.com/nixos-fireactions/nixos-fireactions/internal/hosttest"
	"golang.org/x/sys/unix"
)

const runnerScript = `echo "HOME=$HOME USER=$USER PATH=$PATH CWD=$(pwd) X=$X"
echo "registering"
echo "warning on stderr" >&2
echo "Runner: listening for jobs"
echo "Runner: listening for jobs (again)"
exit 3`

func testConfig(url string) agentproto.Config {
	return agentproto.Config{
		VMID:     "vm-42",
		Hostname: "runner-vm-42",
		Modules:  []string{"/etc/fireactions/modules/01-virtio.ko", "/etc/fireactions/modules/02-virtio_net.ko"},
		Network:  agentproto.Network{Interface: "eth0", Address: "10.200.0.2/24", Gateway: "10.200.0.1", DNS: []string{"10.200.0.1", "1.1.1.1"}},
		Report:   agentproto.Reporter{URL: url, Token: "vm-token"},
		Runner: agentproto.Runner{
			Forge: "gitea", User: "runner", UID: 1001, GID: 1002,
			Home: "/home/runner", WorkDir: "/home/runner/work",
			Command:   []string{"sh", "-c", runnerScript},
			Env:       []string{"X=1"},
			ReadyLine: "listening for jobs",
			Files: []agentproto.File{
				{Path: "/home/runner/.runner", Mode: 0o600, Content: []byte(`{"uuid":"u","token":"runner-secret"}`)},
				{Path: "/home/runner/cfg/config.yaml", Mode: 0o644, Content: []byte("log: {level: info}\n")},
			},
		},
	}
}

// newTestRoot returns a guest root holding the config and an /etc/passwd
// without a final newline.
func newTestRoot(t *testing.T, cfg agentproto.Config) string {
	root := t.TempDir()
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	must(t, os.MkdirAll(filepath.Join(root, "etc/fireactions"), 0o700))
	must(t, os.WriteFile(filepath.Join(root, agentproto.ConfigPath), b, 0o600))
	must(t, os.WriteFile(filepath.Join(root, "etc/passwd"), []byte("root:x:0:0:root:/root:/bin/sh"), 0o644))
	must(t, os.Symlink("/run/systemd/resolve/stub-resolv.conf", filepath.Join(root, "etc/resolv.conf")))
	return root
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// jobEvents are a VM's reports from boot to its runner's end.
var jobEvents = []agentproto.Event{agentproto.EventBooted, agentproto.EventNetworkUp, agentproto.EventRunnerStarted,
	agentproto.EventRunnerReady, agentproto.EventRunnerExited}

func TestBootRunsTheJobAndReportsInOrder(t *testing.T) {
	host := newHostServer(t, "vm-token")
	cfg := testConfig(host.URL)
	root := newTestRoot(t, cfg)
	sys := newFakeSys(t, root)
	con := &hosttest.SyncBuffer{}
	a := &Agent{Root: root, Sys: sys, Console: con}

	a.Boot(context.Background())

	// Reports: all of them, in order, stamped with the VM and rising uptimes.
	want := jobEvents
	if got := host.events(); !slices.Equal(got, want) {
		t.Fatalf("events %v, want %v\nconsole:\n%s", got, want, con)
	}
	reps := host.got()
	// Uptimes rise, except that runner-exited is stamped when the runner
	// exited, which may be before its buffered ready line was read.
	for i, r := range reps {
		prev := 0
		if r.Event == agentproto.EventRunnerExited {
			prev = 1
		}
		if r.VMID != "vm-42" || r.Uptime <= 0 || i > prev && r.Uptime < reps[i-1-prev].Uptime {
			t.Errorf("report %d = %+v", i, r)
		}
	}
	if last := reps[len(reps)-1]; last.ExitCode != 3 {
		t.Errorf("runner-exited exit code %d, want 3", last.ExitCode)
	}

	// Effects, in order, ending in power-off.
	wantCalls := []string{
		"mount proc /proc", "mount sysfs /sys", "mount devtmpfs /dev", "mount devpts /dev/pts",
		"mount tmpfs /dev/shm", "mount tmpfs /tmp", "mount tmpfs /run",
		"module /etc/fireactions/modules/01-virtio.ko", "module /etc/fireactions/modules/02-virtio_net.ko",
		"hostname runner-vm-42", "network eth0 10.200.0.2/24",
		"mount cgroup2 /sys/fs/cgroup", "start sh -c " + runnerScript, "kill-user 1001", "poweroff",
	}
	if got := sys.callList(); !slices.Equal(got, wantCalls) {
		t.Errorf("calls:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(wantCalls, "\n"))
	}

	// The credential is gone.
	if _, err := os.Stat(filepath.Join(root, agentproto.ConfigPath)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("config still there: %v", err)
	}

	// /etc.
	if got := readFile(t, filepath.Join(root, "etc/hostname")); got != "runner-vm-42\n" {
		t.Errorf("/etc/hostname %q", got)
	}
	if got := readFile(t, filepath.Join(root, "etc/hosts")); !strings.HasPrefix(got, "127.0.0.1\tlocalhost runner-vm-42\n") {
		t.Errorf("/etc/hosts %q", got)
	}
	if got := readFile(t, filepath.Join(root, "etc/resolv.conf")); got != "nameserver 10.200.0.1\nnameserver 1.1.1.1\n" {
		t.Errorf("/etc/resolv.conf %q", got)
	}
	if got := readFile(t, filepath.Join(root, "etc/passwd")); got != "root:x:0:0:root:/root:/bin/sh\nrunner:x:1001:1002:fireactions runner:/home/runner:/bin/sh\n" {
		t.Errorf("/etc/passwd %q", got)
	}
	if got := readFile(t, filepath.Join(root, "etc/group")); got != "root:x:0:\nrunner:x:1002:\n" {
		t.Errorf("/etc/group %q", got)
	}

	// Home, work directory and files, owned by the runner.
	runner := [2]int{1001, 1002}
	for _, c := range []struct {
		path  string
		mode  os.FileMode
		owner [2]int
	}{
		{"/home", os.ModeDir | 0o755, [2]int{0, 0}},
		{"/home/runner", os.ModeDir | 0o700, runner},
		{"/home/runner/work", os.ModeDir | 0o755, runner},
		{"/home/runner/.runner", 0o600, runner},
		{"/home/runner/cfg", os.ModeDir | 0o755, runner},
		{"/home/runner/cfg/config.yaml", 0o644, runner},
	} {
		fi, err := os.Lstat(filepath.Join(root, c.path))
		if err != nil {
			t.Errorf("%s: %v", c.path, err)
			continue
		}
		if fi.Mode() != c.mode {
			t.Errorf("%s mode %v, want %v", c.path, fi.Mode(), c.mode)
		}
		if o, ok := sys.owner(c.path); !ok || o != c.owner {
			t.Errorf("%s owner %v (set %v), want %v", c.path, o, ok, c.owner)
		}
	}
	if got := readFile(t, filepath.Join(root, "home/runner/.runner")); got != `{"uuid":"u","token":"runner-secret"}` {
		t.Errorf(".runner %q", got)
	}

	// The runner's process: its user, its session, its directory.
	if !sys.cmd.SysProcAttr.Setsid {
		t.Error("runner not in its own session")
	}
	if c := sys.cred; c.Uid != 1001 || c.Gid != 1002 || c.Groups == nil || len(c.Groups) != 0 || c.NoSetGroups {
		t.Errorf("credential %+v: want uid 1001 gid 1002, supplementary groups dropped", c)
	}
	if sys.cmd.Dir != filepath.Join(root, "home/runner/work") {
		t.Errorf("runner dir %s", sys.cmd.Dir)
	}

	// Console: agent lines with uptimes, every runner line prefixed, the
	// environment as documented.
	out := con.String()
	for _, want := range []string{
		"HOME=/home/runner USER=runner PATH=" + DefaultPath + " CWD=" + filepath.Join(root, "home/runner/work") + " X=1\n",
		"[runner] registering\n", "[runner] warning on stderr\n", "[runner] Runner: listening for jobs\n",
		"event runner-ready at +", "event runner-exited at +", "exit code 3",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("console lacks %q:\n%s", want, out)
		}
	}
	for _, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		if !strings.HasPrefix(line, "[runner] ") && !agentLine(line) {
			t.Errorf("console line %q is neither the agent's nor the runner's", line)
		}
	}
	if strings.Contains(out, "runner-secret") {
		t.Error("the runner's credential reached the console")
	}
}

// agentLine says whether line looks like "[agent +1.234s] ...".
func agentLine(line string) bool {
	rest, ok := strings.CutPrefix(line, "[agent +")
	if !ok {
		return false
	}
	num, _, ok := strings.Cut(rest, "s] ")
	if !ok {
		return false
	}
	_, err := time.ParseDuration(num + "s")
	return err == nil && strings.Count(num, ".") == 1 && len(num[strings.Index(num, ".")+1:]) == 3
}

func TestBootReportsAFailureAndPowersOff(t *testing.T) {
	host := newHostServer(t, "vm-token")
	cfg := testConfig(host.URL)
	// A runner file under a path that is a regular file cannot be written.
	cfg.Runner.Files = []agentproto.File{{Path: "/etc/passwd/oops", Mode: 0o600, Content: []byte("x")}}
	root := newTestRoot(t, cfg)
	sys := newFakeSys(t, root)
	con := &hosttest.SyncBuffer{}
	(&Agent{Root: root, Sys: sys, Console: con}).Boot(context.Background())

	got := host.got()
	if ev := host.events(); !slices.Equal(ev, []agentproto.Event{agentproto.EventBooted, agentproto.EventNetworkUp, agentproto.EventFailed}) {
		t.Fatalf("events %v\n%s", ev, con)
	}
	if msg := got[2].Message; !strings.Contains(msg, "/etc/passwd/oops") {
		t.Errorf("failure message %q does not say what failed", msg)
	}
	calls := sys.callList()
	if calls[len(calls)-1] != "poweroff" || slices.ContainsFunc(calls, func(c string) bool { return strings.HasPrefix(c, "start ") }) {
		t.Errorf("calls %v: want power-off and no runner", calls)
	}
	if !strings.Contains(con.String(), "fatal: writing runner file /etc/passwd/oops") {
		t.Errorf("console lacks the fatal error:\n%s", con)
	}
}

func TestBootWithoutNetworkStillPowersOff(t *testing.T) {
	host := newHostServer(t, "vm-token")
	cfg := testConfig(host.URL)
	root := newTestRoot(t, cfg)
	sys := newFakeSys(t, root)
	sys.netErr = errors.New("interface eth0 did not appear")
	con := &hosttest.SyncBuffer{}
	start := time.Now()
	(&Agent{Root: root, Sys: sys, Console: con}).Boot(context.Background())
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("took %s: unsendable reports must not hold up power-off", d)
	}
	if n := len(host.got()); n != 0 {
		t.Errorf("%d reports sent without a network", n)
	}
	if sys.poweroffs != 1 {
		t.Errorf("powered off %d times", sys.poweroffs)
	}
	if out := con.String(); !strings.Contains(out, "fatal: configuring network: interface eth0 did not appear") ||
		!strings.Contains(out, "2 reports not sent") {
		t.Errorf("console:\n%s", out)
	}
}

func TestBootWithoutConfigPowersOff(t *testing.T) {
	root := t.TempDir()
	sys := newFakeSys(t, root)
	con := &hosttest.SyncBuffer{}
	(&Agent{Root: root, Sys: sys, Console: con}).Boot(context.Background())
	if sys.poweroffs != 1 || !strings.Contains(con.String(), "fatal: reading config") {
		t.Errorf("poweroffs %d, console:\n%s", sys.poweroffs, con)
	}
}

func TestMountsIgnoreBusyOnly(t *testing.T) {
	root := t.TempDir()
	sys := newFakeSys(t, root)
	sys.mountErr = map[string]error{"/proc": unix.EBUSY}
	a := &Agent{Root: root, Sys: sys}
	if err := a.mountAll(); err != nil {
		t.Fatalf("EBUSY: %v", err)
	}
	sys.mountErr = map[string]error{"/sys": unix.EPERM}
	if err := a.mountAll(); !errors.Is(err, unix.EPERM) || !strings.Contains(err.Error(), "sysfs on /sys") {
		t.Fatalf("EPERM: %v", err)
	}
}

func TestModuleFailureIsNotFatal(t *testing.T) {
	host := newHostServer(t, "vm-token")
	cfg := testConfig(host.URL)
	cfg.Runner.Command = []string{"/bin/true"}
	root := newTestRoot(t, cfg)
	sys := newFakeSys(t, root)
	sys.moduleErr = syscall.ENOEXEC
	con := &hosttest.SyncBuffer{}
	if err := (&Agent{Root: root, Sys: sys, Console: con}).Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(con.String(), "loaded 0 of 2 kernel modules") {
		t.Errorf("console:\n%s", con)
	}
	if ev := host.events(); ev[len(ev)-1] != agentproto.EventRunnerExited {
		t.Errorf("events %v", ev)
	}
}

func TestRunnerExitIsNotHeldUpByLeftoverProcesses(t *testing.T) {
	host := newHostServer(t, "vm-token")
	cfg := testConfig(host.URL)
	cfg.Runner.Command = []string{"/bin/sh", "-c", "(sleep 3; echo late) & echo bye; exit 4"}
	root := newTestRoot(t, cfg)
	sys := newFakeSys(t, root)
	con := &hosttest.SyncBuffer{}
	start := time.Now()
	if err := (&Agent{Root: root, Sys: sys, Console: con}).Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Run took %s with a leftover process holding the output", d)
	}
	reps := host.got()
	last := reps[len(reps)-1]
	if last.Event != agentproto.EventRunnerExited || last.ExitCode != 4 {
		t.Fatalf("last report %+v", last)
	}
	// Stamped when the runner exited, not when its output was given up.
	if started := reps[len(reps)-2]; last.Uptime-started.Uptime > outputQuiet {
		t.Errorf("runner-exited stamped %s after runner-started", last.Uptime-started.Uptime)
	}
	if out := con.String(); !strings.Contains(out, "[runner] bye\n") || !strings.Contains(out, "leftover processes") {
		t.Errorf("console:\n%s", out)
	}
}

func TestCancellingKillsTheRunner(t *testing.T) {
	host := newHostServer(t, "vm-token")
	cfg := testConfig(host.URL)
	cfg.Runner.Command = []string{"/bin/sh", "-c", "echo listening for jobs; sleep 30"}
	root := newTestRoot(t, cfg)
	sys := newFakeSys(t, root)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		for !slices.Contains(host.events(), agentproto.EventRunnerReady) {
			time.Sleep(10 * time.Millisecond)
		}
		cancel()
	}()
	start := time.Now()
	a := &Agent{Root: root, Sys: sys, FlushTimeout: 100 * time.Millisecond}
	if err := a.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %s", d)
	}
	if s := sys.cmd.ProcessState; s == nil || s.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Errorf("runner state %v", s)
	}
}
