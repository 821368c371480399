//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/bits"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"golang.org/x/sys/unix"
)

// sandboxWorkflow is the one job of TestUnitSandboxRunsAJob: it prints what
// the image's last layer needed the unit's image capabilities for, as the
// guest sees it.
const sandboxWorkflow = `on: [push]
jobs:
  sandbox:
    runs-on: fireactions-sandbox
    steps:
      - run: |
          echo "fireactions-vm=$(hostname) uid=$(id -u)"
          echo "data=$(stat -c %u:%g:%a /srv/runner-data) dev=$(stat -c %t:%T /opt/fa-null)"
          . /srv/runner-data/env && echo "profile=$FA_PROFILE"
`

// TestUnitSandboxRunsAJob runs the orchestrator the way the NixOS module's
// rendered unit would: the capability bounding set, user, no-new-privileges,
// umask, environment and PATH tools read from the module's evaluation
// (nix/eval/checks.nix, the host with an OCI-image pool), applied with
// setpriv since PID 1 here is not systemd. First a negative control: the
// same image pool under the unit of a host without image pools (CAP_NET_ADMIN
// only) must fail to flatten the image with EPERM, so the image pool's
// capabilities are needed and the test can fail; and under the image
// unit's set less any one capability it adds, the image does not flatten
// as it is. Then under the image
// unit's sandbox (checked in /proc: the process has exactly that set) the
// orchestrator pulls and flattens the image, boots a VM from it and runs a
// Gitea job in it.
//
// What is not reproduced here, because only systemd applies it: the
// unit's mount namespace (ProtectSystem, ProtectHome, PrivateTmp), its
// seccomp filters (SystemCallFilter, RestrictAddressFamilies,
// RestrictNamespaces, MemoryDenyWriteExecute, ...), its device cgroup
// (DeviceAllow) and its cgroup itself.
func TestUnitSandboxRunsAJob(t *testing.T) {
	requireRoot(t)
	began := time.Now()
	image := renderedUnit(t, "image", "fireteact")
	initramfs := renderedUnit(t, "initramfs", "fireteact")
	t.Logf("FIGURE image unit: CapabilityBoundingSet=%v User=%s AmbientCapabilities=%v NoNewPrivileges=%v UMask=%04o PATH packages=%v",
		image.caps, image.user, image.ambient, image.noNewPrivs, image.umask, image.pathPackages())
	t.Logf("FIGURE initramfs unit: CapabilityBoundingSet=%v", initramfs.caps)
	if capMask(t, image.caps)&^capMask(t, initramfs.caps) == 0 {
		t.Fatalf("the image unit's set %v adds nothing to the initramfs unit's %v: the negative control would prove nothing", image.caps, initramfs.caps)
	}
	// The unit runs the settings' programs by absolute path; so does the
	// test's own config below (QEMU and the agent are not on PATH).
	for _, p := range []string{image.settings.AgentPath, image.settings.VMM.QEMU.Binary} {
		if !filepath.IsAbs(p) {
			t.Fatalf("the unit's settings name %q, not an absolute path: the test's config would not match", p)
		}
	}

	rig := newGiteaImageRig(t, fmt.Sprintf("fasbx%d", os.Getpid()%100000))
	ns, bin, work, gitea, tokenFile := rig.ns, rig.bin, rig.work, rig.gitea, rig.tokenFile
	// The package installs the binary under the face's name too.
	if err := os.Symlink("fireactions", filepath.Join(bin, "fireteact")); err != nil {
		t.Fatal(err)
	}
	tools := unitPath(t, image.path)
	imageRef := serveRegistry(t, ns) + "/e2e/sandbox:v1"
	pushImage(t, ns, imageRef, sandboxImage(t, giteaRunner()))
	t.Logf("FIGURE set-up (binaries, image, Gitea) took %s", time.Since(began).Round(time.Millisecond))

	// The unit's configuration: its state and API socket in the unit's
	// state and runtime directories, Gitea's token from its credentials,
	// the agent and QEMU by absolute path.
	config := func(state, runtime, creds string) string {
		c := rig.config("e2esbx", work, "fasbx0", "10.216.0.0/24")
		c.StateDir, c.API.Socket = state, filepath.Join(runtime, "api.sock")
		c.Forges[0].TokenFile = filepath.Join(creds, image.credential)
		c.AgentPath = filepath.Join(bin, "fireactions-agent")
		c.VMM = &vmmConfig{Driver: "qemu", QEMU: &qemuConfig{Binary: "/usr/bin/qemu-system-x86_64"}}
		c.DrainGrace = "2m"
		c.Pools = []poolConfig{rig.imagePool("img", "fireactions-sandbox", imageRef, "Always")}
		return c.yaml(t)
	}

	// Negative control: the initramfs unit's sandbox on the image pool.
	t.Logf("negative control: the image pool under the initramfs unit's set %v", initramfs.caps)
	neg := startUnit(t, ns, initramfs, bin, tools, filepath.Join(work, "negative"), tokenFile, config)
	neg.checkApplied(t)
	select {
	case <-neg.exited:
	case <-time.After(2 * time.Minute):
		t.Fatal("under CAP_NET_ADMIN only, the orchestrator did not give up on the image pool within 2m")
	}
	eperm := logLines(neg.log, regexp.MustCompile(`srv/runner-data/?: chown: operation not permitted`))
	if len(eperm) == 0 {
		b, _ := os.ReadFile(neg.log)
		t.Fatalf("under CAP_NET_ADMIN only, the flatten did not fail with EPERM on chown (exit %v); log:\n%s", neg.exitErr, tail(b, 4<<10))
	}
	t.Logf("FIGURE negative control: exit %v after %s; %s", neg.exitErr, time.Since(neg.started).Round(time.Millisecond), eperm[0])
	if neg.exitErr == nil {
		t.Errorf("under CAP_NET_ADMIN only, the orchestrator exited 0 with an image pool")
	}
	if l := logLines(neg.log, regexp.MustCompile(`msg="image pulled"`)); len(l) != 0 {
		t.Errorf("under CAP_NET_ADMIN only, the image was pulled: %v", l)
	}
	if neg.notify.count(neg.pid, "READY=1") != 0 {
		t.Errorf("under CAP_NET_ADMIN only, the orchestrator said READY=1")
	}
	if vms := vmDirs(neg.state); len(vms) != 0 {
		t.Errorf("under CAP_NET_ADMIN only, VMs were made: %v", vms)
	}
	assertNothingLeft(t, ns, gitea, neg.state, "fasbx0")
	// And each capability the image unit adds is needed by this image.
	withoutEach(t, ns, image, initramfs, bin, tools, filepath.Join(work, "without"), tokenFile, imageRef, config)

	// The image unit's sandbox: the same pool pulls, boots and runs a job.
	pos := startUnit(t, ns, image, bin, tools, filepath.Join(work, "positive"), tokenFile, config)
	pos.checkApplied(t)
	pos.waitFor(t, time.Minute, "READY=1 from the main process", func() bool { return pos.notify.count(pos.pid, "READY=1") > 0 })
	pos.waitFor(t, 4*time.Minute, "the VM to be idle", func() bool {
		for _, phase := range vmDirs(pos.state) {
			if phase == "idle" {
				return true
			}
		}
		return false
	})
	t.Logf("FIGURE start -> VM idle %s", time.Since(pos.started).Round(time.Millisecond))
	for _, l := range logLines(pos.log, regexp.MustCompile(`event=runner-ready`)) {
		if m := regexp.MustCompile(`guest_uptime=(\S+)`).FindStringSubmatch(l); m != nil {
			t.Logf("FIGURE guest kernel start -> runner ready %s", m[1])
		}
	}
	pulled := logLines(pos.log, regexp.MustCompile(`msg="image pulled"`))
	if len(pulled) != 1 {
		t.Fatalf("want one image pulled, log has %d lines: %v", len(pulled), pulled)
	}
	t.Logf("FIGURE %s", pulled[0])
	if !strings.Contains(pulled[0], "fs=erofs") {
		t.Errorf("the image was not flattened into an erofs image: %s", pulled[0])
	}
	// The VMM runs under the unit's set too (it inherits the bounding set).
	qemus := qemuUnder(pos.state + "/")
	if len(qemus) != 1 {
		t.Fatalf("want one QEMU, have %v", qemus)
	}
	for pid := range qemus {
		st := procStatus(t, pid)
		if got, want := st["CapBnd"], capMask(t, image.caps); got != want {
			t.Errorf("QEMU (pid %d) CapBnd %016x, want the unit's %016x", pid, got, want)
		}
		t.Logf("FIGURE QEMU pid %d: CapBnd=%016x CapEff=%016x", pid, st["CapBnd"], st["CapEff"])
	}

	gitea.api(http.MethodPost, "/api/v1/user/repos", map[string]any{"name": "sbx", "default_branch": "main"}, nil)
	tree := filepath.Join(work, "repo")
	writeFile(t, filepath.Join(tree, ".gitea/workflows/sbx.yml"), 0o644, sandboxWorkflow)
	gitea.push(tree, "ci/sbx", "one job")
	jobStart := time.Now()
	pos.waitFor(t, 5*time.Minute, "the run to complete", func() bool { return completedRuns(gitea, "ci/sbx") == 1 })
	t.Logf("FIGURE push -> run completed %s", time.Since(jobStart).Round(time.Millisecond))
	jobs := gitea.jobs("ci/sbx")
	if len(jobs) != 1 {
		t.Fatalf("want 1 job, Gitea lists %d", len(jobs))
	}
	logText := gitea.raw(fmt.Sprintf("/api/v1/repos/ci/sbx/actions/jobs/%d/logs", jobs[0].ID))
	vm := regexp.MustCompile(`fireactions-vm=([0-9a-f]+) uid=(\d+)`).FindStringSubmatch(logText)
	seen := regexp.MustCompile(`data=(\d+:\d+:\d+) dev=(\S+)`).FindStringSubmatch(logText)
	profile := regexp.MustCompile(`(?m)Z profile=(\S+)\s*$`).FindStringSubmatch(logText)
	switch {
	case jobs[0].Conclusion != "success":
		t.Fatalf("the job concluded %q:\n%s", jobs[0].Conclusion, logText)
	case vm == nil || seen == nil || profile == nil:
		t.Fatalf("the job's log lacks its output:\n%s", logText)
	case vm[2] != "1001":
		t.Errorf("the job ran as uid %s, want the image's runner 1001", vm[2])
	// chown (CAP_CHOWN), then chmod and times of a file another uid owns
	// (CAP_FOWNER), keeping set-gid for a group not ours (CAP_FSETID).
	case seen[1] != "1001:1001:2775":
		t.Errorf("the guest sees /srv/runner-data as %s, want the image's 1001:1001:2775", seen[1])
	// mknod (CAP_MKNOD): 1:3 in hex.
	case seen[2] != "1:3":
		t.Errorf("the guest sees /opt/fa-null as device %s, want the image's 1:3", seen[2])
	// A file a later layer put in that directory (CAP_DAC_OVERRIDE).
	case profile[1] != "from-image":
		t.Errorf("the guest's /srv/runner-data/env says %q, want the image's", profile[1])
	}
	t.Logf("FIGURE job %d in VM %s: uid=%s /srv/runner-data=%s /opt/fa-null=%s env=%s", jobs[0].ID, vm[1], vm[2], seen[1], seen[2], profile[1])

	// Type=notify with WatchdogSec: systemd would kill a unit that does
	// not ping within WatchdogSec of READY=1. The binary pings at half.
	if image.watchdog > 0 {
		readyAt := pos.notify.first(pos.pid, "READY=1")
		pos.waitFor(t, image.watchdog-time.Since(readyAt), fmt.Sprintf("WATCHDOG=1 within WatchdogSec (%s) of READY=1", image.watchdog), func() bool {
			return pos.notify.count(pos.pid, "WATCHDOG=1") > 0
		})
		t.Logf("FIGURE first WATCHDOG=1 %s after READY=1", pos.notify.first(pos.pid, "WATCHDOG=1").Sub(readyAt).Round(time.Millisecond))
	}
	pos.terminate(t)
	pos.waitExit(t, 2*time.Minute)
	assertNothingLeft(t, ns, gitea, pos.state, "fasbx0")
	if pos.notify.count(pos.pid, "STOPPING=1") == 0 {
		t.Errorf("the orchestrator did not say STOPPING=1 on SIGTERM")
	}
	t.Logf("FIGURE notify socket: %d READY=1, %d WATCHDOG=1, %d STOPPING=1 from the main pid %d; from others: %v",
		pos.notify.count(pos.pid, "READY=1"), pos.notify.count(pos.pid, "WATCHDOG=1"), pos.notify.count(pos.pid, "STOPPING=1"),
		pos.pid, pos.notify.fromOthers(pos.pid))
	if others := pos.notify.fromOthers(pos.pid); len(others) != 0 {
		t.Errorf("notifications from processes other than the main one (NotifyAccess=main drops them): %v", others)
	}
	out, err := exec.Command(filepath.Join(bin, "fireactions"), "image", "ls", "--config", pos.config).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "e2e/sandbox:v1") {
		t.Errorf("fireactions image ls: %v\n%s", err, out)
	}
	t.Logf("FIGURE TestUnitSandboxRunsAJob took %s", time.Since(began).Round(time.Millisecond))
}

// unit is the part of a rendered NixOS unit the sandbox is made of.
type unit struct {
	name       string
	caps       []string // CapabilityBoundingSet
	ambient    []string // AmbientCapabilities
	user       string
	noNewPrivs bool
	umask      int
	path       []string // store paths of the packages on PATH
	notify     bool     // Type=notify: systemd gives NOTIFY_SOCKET
	watchdog   time.Duration
	stateMode  os.FileMode // StateDirectoryMode
	runMode    os.FileMode // RuntimeDirectoryMode
	credential string      // LoadCredential's name
	settings   struct {
		AgentPath string `json:"agent_path"`
		VMM       struct {
			QEMU struct {
				Binary string `json:"binary"`
			} `json:"qemu"`
		} `json:"vmm"`
	}
}

// renderedUnit evaluates the NixOS module's unit of face on the host of
// the sandbox scenario (nix/eval/checks.nix).
func renderedUnit(t *testing.T, sandbox, face string) unit {
	t.Helper()
	expr := fmt.Sprintf("(import ./nix/eval/checks.nix { }).sandboxes.%s.units.%s", sandbox, face)
	cmd := exec.Command("nix-instantiate", "--eval", "--strict", "--json", "-E", expr)
	cmd.Dir = ".."
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("nix-instantiate %s: %v\n%s", expr, err, stderr.Bytes())
	}
	var r struct {
		Path          []string        `json:"path"`
		ServiceConfig map[string]any  `json:"serviceConfig"`
		Settings      json.RawMessage `json:"settings"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("%s: %v\n%s", expr, err, out)
	}
	sc := r.ServiceConfig
	strs := func(k string) []string { // systemd takes one string or a list
		switch v := sc[k].(type) {
		case nil:
			return nil
		case string:
			return strings.Fields(v)
		case []any:
			var l []string
			for _, x := range v {
				l = append(l, fmt.Sprint(x))
			}
			return l
		}
		t.Fatalf("%s.serviceConfig.%s is %T", expr, k, sc[k])
		return nil
	}
	str := func(k, def string) string {
		if v, ok := sc[k]; ok {
			return fmt.Sprint(v)
		}
		return def
	}
	octal := func(k, def string) int {
		n, err := strconv.ParseInt(str(k, def), 8, 32)
		if err != nil {
			t.Fatalf("%s.serviceConfig.%s: %v", expr, k, err)
		}
		return int(n)
	}
	u := unit{
		name:      sandbox,
		caps:      strs("CapabilityBoundingSet"),
		ambient:   strs("AmbientCapabilities"),
		user:      str("User", "root"),
		umask:     octal("UMask", "0022"), // systemd's default
		path:      r.Path,
		notify:    str("Type", "simple") == "notify",
		stateMode: os.FileMode(octal("StateDirectoryMode", "0755")),
		runMode:   os.FileMode(octal("RuntimeDirectoryMode", "0755")),
	}
	if len(u.caps) == 0 {
		t.Fatalf("%s has no CapabilityBoundingSet: the sandbox would be all of root's", expr)
	}
	u.noNewPrivs, _ = sc["NoNewPrivileges"].(bool)
	if w := str("WatchdogSec", ""); w != "" {
		if u.watchdog, err = time.ParseDuration(w); err != nil {
			t.Fatalf("%s.serviceConfig.WatchdogSec %q: %v", expr, w, err)
		}
	}
	for _, c := range strs("LoadCredential") {
		u.credential, _, _ = strings.Cut(c, ":")
	}
	if err := json.Unmarshal(r.Settings, &u.settings); err != nil {
		t.Fatalf("%s.settings: %v", expr, err)
	}
	return u
}

// pathPackages are the nixpkgs names of the unit's PATH packages.
func (u unit) pathPackages() []string {
	var l []string
	for _, p := range u.path {
		l = append(l, storeName(p))
	}
	return l
}

// storeName is the package name of a store path, without its hash and
// version: /nix/store/<hash>-erofs-utils-1.8.5 is erofs-utils.
func storeName(p string) string {
	_, n, _ := strings.Cut(filepath.Base(p), "-")
	return regexp.MustCompile(`-[0-9][^-]*$`).ReplaceAllString(n, "")
}

// debianOf is the Debian package giving what a nixpkgs package on the
// unit's PATH gives. A package the module adds that is not here fails the
// test: say which Debian package is its equivalent.
var debianOf = map[string]string{
	"nftables":    "nftables",    // nft
	"iproute2":    "iproute2",    // ip, tc, bridge, ss, ...
	"erofs-utils": "erofs-utils", // mkfs.erofs, fsck.erofs, dump.erofs
	"e2fsprogs":   "e2fsprogs",   // mkfs.ext4, e2fsck, tune2fs, ...
}

// unitPath makes the unit's PATH on this machine: a directory of links to
// every program the Debian equivalents of its packages install, as
// NixOS's PATH has each package's bin and sbin. Nothing else: the
// orchestrator runs QEMU and the guest agent by the absolute paths its
// settings name, as the unit's settings do, and execs nothing else (nft,
// mkfs.erofs, mkfs.ext4 by name). The module turns NixOS's default path
// (coreutils, findutils, gnugrep, gnused, systemd) off with
// enableDefaultPath = false, so this is the whole of the unit's PATH.
func unitPath(t *testing.T, storePaths []string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "unit-path")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, sp := range storePaths {
		pkg, ok := debianOf[storeName(sp)]
		if !ok {
			t.Fatalf("the unit's PATH has %s (%s), which this test has no Debian equivalent for: add it to debianOf", storeName(sp), sp)
		}
		out, err := exec.Command("dpkg", "-L", pkg).Output()
		if err != nil {
			t.Fatalf("dpkg -L %s: %v (scripts/install-deps.sh installs it)", pkg, err)
		}
		for _, f := range strings.Fields(string(out)) {
			if d := filepath.Dir(f); d != "/bin" && d != "/sbin" && d != "/usr/bin" && d != "/usr/sbin" {
				continue
			}
			st, err := os.Stat(f)
			if err != nil || !st.Mode().IsRegular() || st.Mode()&0o111 == 0 {
				continue
			}
			link := filepath.Join(dir, filepath.Base(f))
			if _, err := os.Lstat(link); err == nil {
				continue // /bin/ip and /sbin/ip: one program
			}
			if err := os.Symlink(f, link); err != nil {
				t.Fatal(err)
			}
			names = append(names, filepath.Base(f))
		}
	}
	sort.Strings(names)
	t.Logf("FIGURE the unit's PATH here: %s = %v", dir, names)
	return dir
}

// sandboxImage is the runner image of the image test with a last layer
// that only root with the image unit's capabilities can flatten: a
// directory of the runner's, set-gid (chown: CAP_CHOWN; its mode and
// times: CAP_FOWNER, the file being another uid's; set-gid for a group
// root is not in: CAP_FSETID), a file created in it (CAP_DAC_OVERRIDE), a
// device node (CAP_MKNOD) and a program with file capabilities
// (CAP_SETFCAP). Not the runner's home: the guest agent makes that 0700
// at boot, whatever the image says.
func sandboxImage(t *testing.T, runner string) v1.Image {
	t.Helper()
	// cap_net_raw+ep: VFS_CAP_REVISION_2 with the effective bit, the
	// permitted set's low word bit 13, nothing else.
	var fcap bytes.Buffer
	for _, w := range []uint32{0x02000001, 1 << unix.CAP_NET_RAW, 0, 0, 0} {
		fcap.Write([]byte{byte(w), byte(w >> 8), byte(w >> 16), byte(w >> 24)})
	}
	last := layerFrom(t, []tarEntry{
		{name: "srv/", mode: 0o755, dir: true},
		{name: "srv/runner-data/", mode: 0o2775, dir: true, uid: 1001, gid: 1001},
		{name: "srv/runner-data/env", mode: 0o644, uid: 1001, gid: 1001, content: "FA_PROFILE=from-image\n"},
		{name: "opt/", mode: 0o755, dir: true},
		{name: "opt/fa-null", mode: 0o666, char: &[2]int64{1, 3}},
		{name: "bin/fa-raw", mode: 0o755, content: "#!/bin/sh\nexit 0\n", xattrs: map[string]string{"security.capability": fcap.String()}},
	})
	img, err := mutate.AppendLayers(runnerImage(t, runner), last)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// unitRun is the orchestrator started as a unit would be.
type unitRun struct {
	*orchestrator
	unit    unit
	config  string
	pid     int
	exe     string // the binary the main process must be running
	env     []string
	notify  *notifySocket
	started time.Time
}

// startUnit starts `fireteact serve` in ns with u's sandbox: the
// directories systemd makes for the unit (state, runtime, credentials)
// under dir, its user, bounding set, ambient and inheritable sets,
// no-new-privileges, umask and environment, by setpriv.
func startUnit(t *testing.T, ns *testNetns, u unit, bin, tools, dir, tokenFile string, config func(state, runtime, creds string) string) *unitRun {
	t.Helper()
	cfgPath, state, runtime, creds := unitDirs(t, u, dir, tokenFile, config)
	usr, err := user.Lookup(u.user)
	if err != nil {
		t.Fatalf("User=%s: %v", u.user, err)
	}
	r := &unitRun{unit: u, config: cfgPath, notify: listenNotify(t, filepath.Join(dir, "notify.sock"))}
	r.env = unitEnv(t, u, usr, tools, state, runtime, creds, r.notify.path)
	setpriv := setprivArgs(u, usr)
	// `ip netns exec` and setpriv exec, not fork: the process started is
	// the orchestrator in the end, as systemd's main process.
	cmd := ns.command(context.Background(), setpriv[0], append(setpriv[1:], filepath.Join(bin, "fireteact"), "serve", cfgPath)...)
	cmd.Env = r.env
	cmd.Dir = "/" // WorkingDirectory's default for system units
	logf, err := os.Create(filepath.Join(dir, "fireteact.log"))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s unit: ip netns exec %s %s %s serve %s", u.name, ns.name, strings.Join(setpriv, " "), filepath.Join(bin, "fireteact"), cfgPath)
	r.started = time.Now()
	r.orchestrator = launchOrchestrator(t, cmd, logf, state, u.umask)
	r.pid = cmd.Process.Pid
	if r.exe, err = filepath.EvalSymlinks(filepath.Join(bin, "fireteact")); err != nil {
		t.Fatal(err)
	}
	return r
}

// unitDirs makes what systemd makes for the unit under dir: its state and
// runtime directories (with their modes) and its credentials (a read-only
// copy of tokenFile for LoadCredential); and the config file.
func unitDirs(t *testing.T, u unit, dir, tokenFile string, config func(state, runtime, creds string) string) (cfgPath, state, runtime, creds string) {
	t.Helper()
	state, runtime, creds = filepath.Join(dir, "state"), filepath.Join(dir, "run"), filepath.Join(dir, "credentials")
	for _, d := range []struct {
		path string
		mode os.FileMode
	}{{dir, 0o755}, {state, u.stateMode}, {runtime, u.runMode}, {creds, 0o700}} {
		if err := os.Mkdir(d.path, d.mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(d.path, d.mode); err != nil { // past the umask
			t.Fatal(err)
		}
	}
	token, err := os.ReadFile(tokenFile)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(creds, u.credential), 0o400, string(token))
	if err := os.Chmod(creds, 0o500); err != nil {
		t.Fatal(err)
	}
	cfgPath = filepath.Join(dir, "fireteact.yaml")
	writeFile(t, cfgPath, 0o600, config(state, runtime, creds))
	return cfgPath, state, runtime, creds
}

// setprivArgs is the setpriv command line giving u's user, bounding set,
// inheritable and ambient sets and no-new-privileges.
func setprivArgs(u unit, usr *user.User) []string {
	a := []string{"/usr/bin/setpriv",
		"--reuid", usr.Uid, "--regid", usr.Gid, "--init-groups",
		"--bounding-set", capList(u.caps),
		"--inh-caps", capList(u.ambient), // ambient capabilities must be inheritable
		"--ambient-caps", capList(u.ambient),
	}
	if u.noNewPrivs {
		a = append(a, "--no-new-privs")
	}
	return a
}

// withoutEach checks that each capability the image unit adds to the
// initramfs unit's is needed to flatten img: under the image unit's
// sandbox less that one capability, `fireteact image pull` fails with
// EPERM or EACCES, or stores a tree other than the image's (set-gid lost
// without CAP_FSETID is silent: the kernel drops the bit).
func withoutEach(t *testing.T, ns *testNetns, image, initramfs unit, bin, tools, dir, tokenFile, ref string, config func(state, runtime, creds string) string) {
	t.Helper()
	usr, err := user.Lookup(image.user)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, c := range image.caps {
		if slices.Contains(initramfs.caps, c) {
			continue
		}
		u := image
		u.name = "image without " + c
		u.caps = slices.DeleteFunc(slices.Clone(image.caps), func(x string) bool { return x == c })
		cfgPath, state, runtime, creds := unitDirs(t, u, filepath.Join(dir, c), tokenFile, config)
		setpriv := setprivArgs(u, usr)
		cmd := ns.command(context.Background(), setpriv[0], append(setpriv[1:], filepath.Join(bin, "fireteact"), "image", "pull", "--config", cfgPath, ref)...)
		cmd.Env = unitEnv(t, u, usr, tools, state, runtime, creds, "")
		cmd.Dir = "/"
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		umaskMu.Lock()
		old := unix.Umask(u.umask)
		err := cmd.Start()
		unix.Umask(old)
		umaskMu.Unlock()
		if err == nil {
			err = cmd.Wait()
		}
		denied := regexp.MustCompile(`[^\n]*(operation not permitted|permission denied)[^\n]*`).Find(out.Bytes())
		switch {
		case err != nil && denied != nil:
			t.Logf("FIGURE without %s: %s", c, denied)
		case err != nil:
			t.Errorf("without %s the pull failed, but not for want of a privilege: %v\n%s", c, err, out.Bytes())
		default:
			// Pulled: what the store holds must then differ from the image.
			got := flattened(t, state, "srv/runner-data")
			if got.Mode&0o7777 == 0o2775 && got.UID == 1001 && got.GID == 1001 {
				t.Errorf("without %s the image was flattened as it is (%s): the image unit does not need %s for it", c, out.Bytes(), c)
			} else {
				t.Logf("FIGURE without %s: pulled, but /srv/runner-data flattened as %d:%d %04o, not the image's 1001:1001 2775", c, got.UID, got.GID, got.Mode&0o7777)
			}
		}
	}
}

// indexEntry is one file of a flattened image in the store's index.
type indexEntry struct {
	Path string `json:"p"`
	Mode uint32 `json:"m"`
	UID  uint32 `json:"u"`
	GID  uint32 `json:"g"`
}

// flattened is the index entry of path in the one image in the store
// under state.
func flattened(t *testing.T, state, path string) indexEntry {
	t.Helper()
	idx, _ := filepath.Glob(filepath.Join(state, "images", "images", "*", "files.json.gz"))
	if len(idx) != 1 {
		t.Fatalf("want one image in the store under %s, have indexes %v", state, idx)
	}
	f, err := os.Open(idx[0])
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(zr)
	for {
		var e indexEntry
		if err := dec.Decode(&e); err != nil {
			t.Fatalf("%s: no %s (%v)", idx[0], path, err)
		}
		if strings.Trim(e.Path, "/") == path {
			return e
		}
	}
}

// unitEnv is the environment systemd gives the unit's process on NixOS,
// with this machine's equivalents:
//
//   - PATH: the unit's Environment=PATH, the bin and sbin of its path
//     packages (here: tools, their Debian equivalents).
//   - LANG: PID 1 reads /etc/locale.conf, which NixOS writes from
//     i18n.defaultLocale (en_US.UTF-8 by default).
//   - TZDIR: NixOS's systemd.globalEnvironment (the tzdata zoneinfo);
//     here /usr/share/zoneinfo. LOCALE_ARCHIVE, its other global
//     variable, names the glibc-locales store path: Debian has no
//     equivalent (no /usr/lib/locale/locale-archive), so it is absent.
//   - USER, LOGNAME, HOME, SHELL: set for units with User=, from its
//     passwd entry.
//   - INVOCATION_ID: every unit's; a fresh random 128-bit id.
//   - NOTIFY_SOCKET: Type=notify; a datagram socket the test reads.
//   - WATCHDOG_USEC: WatchdogSec. WATCHDOG_PID (and SYSTEMD_EXEC_PID) are
//     the main pid, unknown before the fork here; without WATCHDOG_PID
//     sd_watchdog_enabled accepts any process, which the notify socket
//     checks instead (every message comes from the main pid).
//   - STATE_DIRECTORY, RUNTIME_DIRECTORY, CREDENTIALS_DIRECTORY:
//     StateDirectory, RuntimeDirectory, LoadCredential.
//
// Absent because nothing here stands for them: JOURNAL_STREAM (stdout is
// a file, not the journal), MEMORY_PRESSURE_WATCH/WRITE (cgroup
// memory-pressure, needs the unit's cgroup), TERM (no TTY).
func unitEnv(t *testing.T, u unit, usr *user.User, tools, state, runtime, creds, notify string) []string {
	t.Helper()
	id := make([]byte, 16)
	f, err := os.Open("/dev/urandom")
	if err != nil {
		t.Fatal(err)
	}
	io.ReadFull(f, id)
	f.Close()
	env := []string{
		"PATH=" + tools,
		"LANG=en_US.UTF-8",
		"TZDIR=/usr/share/zoneinfo",
		"USER=" + usr.Username, "LOGNAME=" + usr.Username, "HOME=" + usr.HomeDir, "SHELL=" + loginShell(t, usr.Username),
		"INVOCATION_ID=" + fmt.Sprintf("%x", id),
		"STATE_DIRECTORY=" + state, "RUNTIME_DIRECTORY=" + runtime,
	}
	if u.credential != "" {
		env = append(env, "CREDENTIALS_DIRECTORY="+creds)
	}
	if u.notify && notify != "" { // the image CLI is no unit's main process
		env = append(env, "NOTIFY_SOCKET="+notify)
	}
	if u.watchdog > 0 {
		env = append(env, fmt.Sprintf("WATCHDOG_USEC=%d", u.watchdog.Microseconds()))
	}
	return env
}

func loginShell(t *testing.T, name string) string {
	t.Helper()
	f, err := os.Open("/etc/passwd")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if fs := strings.Split(s.Text(), ":"); len(fs) == 7 && fs[0] == name {
			return fs[6]
		}
	}
	t.Fatalf("no passwd entry for %s", name)
	return ""
}

// checkApplied is the positive control: the main process is the
// orchestrator, with exactly the unit's capability sets, user, groups,
// no-new-privileges, umask and environment.
func (r *unitRun) checkApplied(t *testing.T) {
	t.Helper()
	waitFor(t, 10*time.Second, "the main process to exec the orchestrator", func() bool {
		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", r.pid))
		return err == nil && exe == r.exe
	})
	st := procStatus(t, r.pid)
	usr, _ := user.Lookup(r.unit.user)
	want := map[string]uint64{
		"CapBnd": capMask(t, r.unit.caps),
		"CapPrm": capMask(t, r.unit.caps), // root: its bounding set
		"CapEff": capMask(t, r.unit.caps),
		"CapInh": capMask(t, r.unit.ambient),
		"CapAmb": capMask(t, r.unit.ambient),
		"Umask":  uint64(r.unit.umask),
	}
	if r.unit.noNewPrivs {
		want["NoNewPrivs"] = 1
	} else {
		want["NoNewPrivs"] = 0
	}
	for k, v := range want {
		if st[k] != v {
			t.Errorf("pid %d %s: %x, want %x (the %s unit's)", r.pid, k, st[k], v, r.unit.name)
		}
	}
	ids := procLines(t, r.pid)
	for _, k := range []string{"Uid", "Gid"} {
		want := usr.Uid
		if k == "Gid" {
			want = usr.Gid
		}
		if f := strings.Fields(ids[k]); len(f) != 4 || f[0] != want || f[1] != want || f[2] != want || f[3] != want {
			t.Errorf("pid %d %s: %q, want %s four times", r.pid, k, ids[k], want)
		}
	}
	env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", r.pid))
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Split(strings.TrimSuffix(string(env), "\x00"), "\x00")
	wantEnv := slices.Clone(r.env)
	sort.Strings(got)
	sort.Strings(wantEnv)
	if !slices.Equal(got, wantEnv) {
		t.Errorf("pid %d environment:\n%s\nwant:\n%s", r.pid, strings.Join(got, "\n"), strings.Join(wantEnv, "\n"))
	}
	t.Logf("FIGURE %s unit sandbox applied, pid %d (%s): CapBnd=%016x %v CapEff=%016x CapPrm=%016x CapInh=%016x CapAmb=%016x NoNewPrivs=%d Umask=%04o Uid=%s Gid=%s Groups=%s",
		r.unit.name, r.pid, r.exe, st["CapBnd"], capNames(st["CapBnd"]), st["CapEff"], st["CapPrm"], st["CapInh"], st["CapAmb"],
		st["NoNewPrivs"], st["Umask"], strings.Fields(ids["Uid"])[0], strings.Fields(ids["Gid"])[0], ids["Groups"])
	t.Logf("FIGURE %s unit environment: %s", r.unit.name, strings.Join(got, " "))
}

// procLines is /proc/<pid>/status by field.
func procLines(t *testing.T, pid int) map[string]string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok {
			m[k] = strings.TrimSpace(v)
		}
	}
	return m
}

// procStatus is the capability sets (hex), NoNewPrivs and Umask (octal)
// of /proc/<pid>/status.
func procStatus(t *testing.T, pid int) map[string]uint64 {
	t.Helper()
	out := map[string]uint64{}
	for k, v := range procLines(t, pid) {
		base := 0
		switch {
		case strings.HasPrefix(k, "Cap"):
			base = 16
		case k == "Umask":
			base = 8
		case k == "NoNewPrivs":
			base = 10
		default:
			continue
		}
		n, err := strconv.ParseUint(v, base, 64)
		if err != nil {
			t.Fatalf("/proc/%d/status %s: %q", pid, k, v)
		}
		out[k] = n
	}
	return out
}

// capBits are the capabilities by the name systemd and capabilities(7)
// give them.
var capBits = map[string]int{
	"CAP_CHOWN": unix.CAP_CHOWN, "CAP_DAC_OVERRIDE": unix.CAP_DAC_OVERRIDE, "CAP_DAC_READ_SEARCH": unix.CAP_DAC_READ_SEARCH,
	"CAP_FOWNER": unix.CAP_FOWNER, "CAP_FSETID": unix.CAP_FSETID, "CAP_KILL": unix.CAP_KILL, "CAP_SETGID": unix.CAP_SETGID,
	"CAP_SETUID": unix.CAP_SETUID, "CAP_SETPCAP": unix.CAP_SETPCAP, "CAP_LINUX_IMMUTABLE": unix.CAP_LINUX_IMMUTABLE,
	"CAP_NET_BIND_SERVICE": unix.CAP_NET_BIND_SERVICE, "CAP_NET_BROADCAST": unix.CAP_NET_BROADCAST, "CAP_NET_ADMIN": unix.CAP_NET_ADMIN,
	"CAP_NET_RAW": unix.CAP_NET_RAW, "CAP_IPC_LOCK": unix.CAP_IPC_LOCK, "CAP_IPC_OWNER": unix.CAP_IPC_OWNER,
	"CAP_SYS_MODULE": unix.CAP_SYS_MODULE, "CAP_SYS_RAWIO": unix.CAP_SYS_RAWIO, "CAP_SYS_CHROOT": unix.CAP_SYS_CHROOT,
	"CAP_SYS_PTRACE": unix.CAP_SYS_PTRACE, "CAP_SYS_PACCT": unix.CAP_SYS_PACCT, "CAP_SYS_ADMIN": unix.CAP_SYS_ADMIN,
	"CAP_SYS_BOOT": unix.CAP_SYS_BOOT, "CAP_SYS_NICE": unix.CAP_SYS_NICE, "CAP_SYS_RESOURCE": unix.CAP_SYS_RESOURCE,
	"CAP_SYS_TIME": unix.CAP_SYS_TIME, "CAP_SYS_TTY_CONFIG": unix.CAP_SYS_TTY_CONFIG, "CAP_MKNOD": unix.CAP_MKNOD,
	"CAP_LEASE": unix.CAP_LEASE, "CAP_AUDIT_WRITE": unix.CAP_AUDIT_WRITE, "CAP_AUDIT_CONTROL": unix.CAP_AUDIT_CONTROL,
	"CAP_SETFCAP": unix.CAP_SETFCAP, "CAP_MAC_OVERRIDE": unix.CAP_MAC_OVERRIDE, "CAP_MAC_ADMIN": unix.CAP_MAC_ADMIN,
	"CAP_SYSLOG": unix.CAP_SYSLOG, "CAP_WAKE_ALARM": unix.CAP_WAKE_ALARM, "CAP_BLOCK_SUSPEND": unix.CAP_BLOCK_SUSPEND,
	"CAP_AUDIT_READ": unix.CAP_AUDIT_READ, "CAP_PERFMON": unix.CAP_PERFMON, "CAP_BPF": unix.CAP_BPF,
	"CAP_CHECKPOINT_RESTORE": unix.CAP_CHECKPOINT_RESTORE,
}

func capMask(t *testing.T, caps []string) uint64 {
	t.Helper()
	var m uint64
	for _, c := range caps {
		b, ok := capBits[strings.ToUpper(c)]
		if !ok {
			t.Fatalf("unknown capability %q", c)
		}
		m |= 1 << b
	}
	return m
}

func capNames(m uint64) []string {
	var l []string
	for n, b := range capBits {
		if m&(1<<b) != 0 {
			l = append(l, n)
		}
	}
	sort.Slice(l, func(i, j int) bool { return capBits[l[i]] < capBits[l[j]] })
	if extra := m &^ ((1 << len(capBits)) - 1); extra != 0 {
		l = append(l, fmt.Sprintf("bits %d+", bits.TrailingZeros64(extra)))
	}
	return l
}

// capList is caps as setpriv takes them: none, then each added.
func capList(caps []string) string {
	l := []string{"-all"}
	for _, c := range caps {
		l = append(l, "+"+strings.ToLower(strings.TrimPrefix(strings.ToUpper(c), "CAP_")))
	}
	return strings.Join(l, ",")
}

// notifySocket stands for systemd's notification socket: it records each
// message with the pid the kernel says sent it.
type notifySocket struct {
	path string
	mu   sync.Mutex
	msgs []notifyMsg
}

type notifyMsg struct {
	pid  int
	text string
	at   time.Time
}

func listenNotify(t *testing.T, path string) *notifySocket {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	raw.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PASSCRED, 1) })
	if serr != nil {
		t.Fatal(serr)
	}
	n := &notifySocket{path: path}
	go func() {
		buf, oob := make([]byte, 4096), make([]byte, 1024)
		for {
			k, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
			if err != nil {
				return
			}
			pid := -1
			if scms, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
				for _, scm := range scms {
					if cred, err := unix.ParseUnixCredentials(&scm); err == nil {
						pid = int(cred.Pid)
					}
				}
			}
			n.mu.Lock()
			for _, l := range strings.Split(strings.TrimSpace(string(buf[:k])), "\n") {
				n.msgs = append(n.msgs, notifyMsg{pid: pid, text: l, at: time.Now()})
			}
			n.mu.Unlock()
		}
	}()
	t.Cleanup(func() { c.Close() })
	return n
}

// count is how many text messages pid sent.
func (n *notifySocket) count(pid int, text string) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	k := 0
	for _, m := range n.msgs {
		if m.pid == pid && m.text == text {
			k++
		}
	}
	return k
}

// first is when pid first sent text.
func (n *notifySocket) first(pid int, text string) time.Time {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, m := range n.msgs {
		if m.pid == pid && m.text == text {
			return m.at
		}
	}
	return time.Time{}
}

// fromOthers are the messages not from pid.
func (n *notifySocket) fromOthers(pid int) []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	var l []string
	for _, m := range n.msgs {
		if m.pid != pid {
			l = append(l, fmt.Sprintf("pid %d: %s", m.pid, m.text))
		}
	}
	return l
}
