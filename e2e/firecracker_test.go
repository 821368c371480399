//go:build e2e

package e2e

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/internal/double/firecrackerdouble"
	"github.com/nixos-fireactions/nixos-fireactions/vmm/firecracker"
	"github.com/nixos-fireactions/nixos-fireactions/vmstate"
)

// The jailed firecracker's user in this test.
const fcUID = 64200

// TestFirecrackerGiteaJobs is the core loop with the Firecracker driver,
// jailed as in production, through the Firecracker test double (this host
// has no KVM that runs stock guests; the double checks every API request
// against Firecracker's published description and boots with QEMU). Two
// runs, one of them failing, each in its own jailed microVM; every API
// request valid, the MMDS's among them, its data store naming the VM and
// holding no secret; each VMM unprivileged as its own user (fcUID plus
// the VM's slot) and in a cgroup sized from the VM; a drain leaves no
// runner, process, TAP, jail or file behind.
func TestFirecrackerGiteaJobs(t *testing.T) {
	rig := newGiteaRig(t, fmt.Sprintf("fafc%d", os.Getpid()%100000))
	ns, bin, work, gitea, state, cfgPath := rig.ns, rig.bin, rig.work, rig.gitea, rig.state, rig.cfgPath
	fc, jails, cgroups, record := firecrackerDouble(t, work)
	cfg := rig.config("fc", work, "fafc0", "10.204.0.0/24")
	cfg.DrainGrace = "3m"
	cfg.Metrics = &metricsConfig{Listen: "127.0.0.1:9464"}
	cfg.VMM = &vmmConfig{Driver: "firecracker", Firecracker: &firecrackerConfig{
		Binary: fc.Firecracker, JailerBinary: fc.Jailer, ChrootBaseDir: jails, UID: fcUID, GID: fcUID, MMDS: true,
	}}
	cfg.Pools = []poolConfig{rig.jobPool("fc", "fireactions-e2e", 1, 2)}
	cfg.write(t, cfgPath)

	t.Run("doctor: no KVM for Firecracker here, and the QEMU fallback named", func(t *testing.T) {
		out, err := exec.Command(filepath.Join(bin, "fireactions"), "doctor", cfgPath).CombinedOutput()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 1 {
			t.Fatalf("doctor exited %v, want status 1:\n%s", err, out)
		}
		for _, want := range []string{"FAIL  kvm          /dev/kvm is unusable for stock guests", "vmm.driver: qemu", "TCG",
			"Firecracker v1.17.0-dev", "is a bzImage", "pools that cannot run: fc"} {
			if !strings.Contains(string(out), want) {
				t.Errorf("doctor output lacks %q:\n%s", want, out)
			}
		}
	})

	orch := startOrchestrator(t, ns, bin, cfgPath, state)
	prefix := netip.MustParsePrefix("10.204.0.0/24")
	vmms := newVMMWatch(state, prefix)
	var idleID string
	orch.waitFor(t, 3*time.Minute, "the min_idle VM to be idle", func() bool {
		vmms.look()
		for id, phase := range vmDirs(state) {
			if phase == "idle" {
				idleID = id
				return true
			}
		}
		return false
	})

	secrets := []string{gitea.token, gitea.registrationToken()}
	t.Run("the idle VM is jailed", func(t *testing.T) {
		pid := vmPID(t, state, idleID)
		slot := vmSlot(t, state, idleID, prefix)
		if uid := procUID(t, pid); uid != fcUID+slot {
			t.Errorf("vm %s's VMM (pid %d) runs as uid %d, want %d (%d plus its slot %d)", idleID, pid, uid, fcUID+slot, fcUID, slot)
		}
		jail := filepath.Join(jails, "firecracker", idleID, "root")
		for _, f := range []string{"firecracker", "kernel", "dev/kvm", "dev/net/tun", "run/fc.sock"} {
			if _, err := os.Lstat(filepath.Join(jail, f)); err != nil {
				t.Errorf("jail: %v", err)
			}
		}
		// The initramfs (the runner's credential) left the jail and the
		// VM's directory once Firecracker had read it at InstanceStart.
		for _, f := range []string{filepath.Join(jail, "initramfs"), filepath.Join(state, "vms", idleID, "initramfs.cpio")} {
			if _, err := os.Lstat(f); !os.IsNotExist(err) {
				t.Errorf("the idle VM's initramfs %s is still there (%v)", f, err)
			}
		}
		cg := filepath.Join(cgroups, "fireactions", idleID)
		for file, want := range map[string]string{"cpu.max": "100000 100000", "memory.max": strconv.Itoa((512 + 64) << 20), "cgroup.procs": strconv.Itoa(pid)} {
			if b, err := os.ReadFile(filepath.Join(cg, file)); err != nil || strings.TrimSpace(string(b)) != want {
				t.Errorf("cgroup %s = %q (%v), want %q", file, b, err, want)
			}
		}
		for _, p := range qemuProcesses() {
			for _, s := range secrets {
				if strings.Contains(p, s) {
					t.Errorf("a forge secret is on a QEMU (kernel) command line: %s", p)
				}
			}
		}
	})

	gitea.api(http.MethodPost, "/api/v1/user/repos", map[string]any{"name": "x", "default_branch": "main"}, nil)
	tree := filepath.Join(work, "repo")
	writeFile(t, filepath.Join(tree, ".gitea/workflows/hello.yml"), 0o644, helloWorkflow)
	writeFile(t, filepath.Join(tree, ".gitea/workflows/fail.yml"), 0o644, failWorkflow)
	gitea.push(tree, "ci/x", "first")
	// Gitea must have read the pushed workflows before one is dispatched.
	orch.waitFor(t, time.Minute, "the pushed run", func() bool { vmms.look(); return len(gitea.runs("ci/x")) == 1 })
	gitea.api(http.MethodPost, "/api/v1/repos/ci/x/actions/workflows/fail.yml/dispatches", map[string]any{"ref": "main"}, nil)
	orch.waitFor(t, 6*time.Minute, "2 runs to complete", func() bool {
		vmms.look()
		runs := gitea.runs("ci/x")
		return len(runs) == 2 && runs[0].Status == "completed" && runs[1].Status == "completed"
	})

	vmOf := regexp.MustCompile(`fireactions-vm=([0-9a-f]+) user=(\S+)`)
	seen := map[string]string{}
	for _, j := range gitea.jobs("ci/x") {
		logText := gitea.raw(fmt.Sprintf("/api/v1/repos/ci/x/actions/jobs/%d/logs", j.ID))
		m := vmOf.FindStringSubmatch(logText)
		if m == nil {
			t.Fatalf("job %d (%s) log has no VM id:\n%s", j.ID, j.Conclusion, logText)
		}
		if m[2] == "root" {
			t.Errorf("job %d ran as root", j.ID)
		}
		if _, dup := seen[m[1]]; dup {
			t.Errorf("two jobs ran in VM %s", m[1])
		}
		seen[m[1]] = j.Conclusion
	}
	conclusions := map[string]int{}
	for _, c := range seen {
		conclusions[c]++
	}
	if len(seen) != 2 || conclusions["success"] != 1 || conclusions["failure"] != 1 {
		t.Fatalf("jobs by VM %v: want one success and one failure in two VMs", seen)
	}
	t.Run("each VM's VMM runs as its own user", func(t *testing.T) {
		for id := range seen {
			if _, ok := vmms.uids[id]; !ok {
				t.Errorf("job vm %s's VMM was never seen running", id)
			}
		}
		for id, uid := range vmms.uids {
			if want := fcUID + vmms.slots[id]; uid != want {
				t.Errorf("vm %s's VMM runs as uid %d, want %d (%d plus its slot %d)", id, uid, want, fcUID, vmms.slots[id])
			}
		}
		for _, c := range vmms.clashes {
			t.Errorf("two VMs' VMMs ran as one user: %s", c)
		}
		t.Logf("FIGURE %d VMs' VMMs seen, as uids %v; two or more at once in %d looks, never sharing a uid", len(vmms.uids), vmms.uids, vmms.together)
	})
	orch.waitFor(t, time.Minute, "the jobs' VMs to be gone", func() bool {
		for id := range seen {
			if _, ok := vmDirs(state)[id]; ok {
				return false
			}
		}
		return true
	})
	t.Run("metrics after the runs", func(t *testing.T) {
		// Its min_idle VM and the one started beside it may take both
		// jobs before a poll sees either queued (seen once in a run).
		checkMetrics(t, ns.httpClient(), "http://127.0.0.1:9464/metrics", "fc", 2, 0)
	})

	orch.terminate(t)
	orch.waitExit(t, 2*time.Minute)
	assertNothingLeft(t, ns, gitea, state, "fafc0")
	if left, _ := filepath.Glob(filepath.Join(jails, "firecracker", "*")); len(left) != 0 {
		t.Errorf("jails left: %v", left)
	}
	if ps := pidsWorkingIn(jails); len(ps) != 0 {
		t.Errorf("processes left working in the jails: %v", ps)
	}

	var ready, setup []string
	for _, l := range logLines(orch.log, regexp.MustCompile(`event=runner-ready`)) {
		if m := regexp.MustCompile(`guest_uptime=(\S+)`).FindStringSubmatch(l); m != nil {
			ready = append(ready, m[1])
		}
	}
	for _, l := range logLines(orch.log, regexp.MustCompile(`msg="firecracker started"`)) {
		if m := regexp.MustCompile(`took=(\S+)`).FindStringSubmatch(l); m != nil {
			setup = append(setup, m[1])
		}
	}
	t.Logf("FIGURE Start per VM: jail, jailer, firecracker double, API calls, and QEMU's start inside InstanceStart: %v", setup)
	t.Logf("FIGURE guest kernel start -> runner ready (guest CLOCK_BOOTTIME, QEMU TCG under the double): %v", ready)

	t.Run("every API request was valid", func(t *testing.T) {
		started, total, mmdsConfigs := 0, 0, 0
		mmdsVMs := map[string]bool{}
		for _, r := range readAPIRecord(t, record) {
			total++
			if r.Status/100 != 2 {
				t.Errorf("refused: %s %s (%d %s): %s", r.Method, r.Path, r.Status, r.Fault, r.Body)
			}
			for _, s := range append(vmms.agentTokens(), secrets...) {
				if s != "" && strings.Contains(r.Body, s) {
					t.Errorf("%s %s carries a secret: %s", r.Method, r.Path, r.Body)
				}
			}
			switch r.Path {
			case "/actions":
				started++
			case "/mmds/config":
				mmdsConfigs++
				if want := `{"version":"V2","network_interfaces":["eth0"]}`; r.Body != want {
					t.Errorf("MMDS config %s, want %s", r.Body, want)
				}
			case "/mmds":
				var doc struct {
					Fireactions map[string]string `json:"fireactions"`
				}
				if err := json.Unmarshal([]byte(r.Body), &doc); err != nil {
					t.Errorf("MMDS data store %q: %v", r.Body, err)
					continue
				}
				md := doc.Fireactions
				if len(md) != 3 || md["vm_id"] == "" || md["pool"] != "fc" || md["host_id"] != "fc" {
					t.Errorf("MMDS data store %s: want vm_id, pool fc and host_id fc, and nothing else", r.Body)
				}
				if mmdsVMs[md["vm_id"]] {
					t.Errorf("two MMDS data stores for vm %s", md["vm_id"])
				}
				mmdsVMs[md["vm_id"]] = true
			}
		}
		// The idle VM, the two jobs' VMs, and their replacements; each
		// VM's four boot requests and the MMDS's two.
		if started < 3 || total != 6*started {
			t.Errorf("%d requests for %d InstanceStarts, want 6 per VM and at least 3 VMs", total, started)
		}
		if mmdsConfigs != started || len(mmdsVMs) != started {
			t.Errorf("%d MMDS configs and data stores for %d VMs, for %d InstanceStarts", mmdsConfigs, len(mmdsVMs), started)
		}
		for id := range seen {
			if !mmdsVMs[id] {
				t.Errorf("no MMDS data store names job vm %s (have %v)", id, mmdsVMs)
			}
		}
		if !mmdsVMs[idleID] {
			t.Errorf("no MMDS data store names the first idle vm %s", idleID)
		}
		t.Logf("FIGURE %d VMs started through the double, %d API requests, all accepted, %d MMDS data stores", started, total, len(mmdsVMs))
	})
}

// firecrackerDouble builds the double and makes a chroot base the jailed
// user can traverse (the double is not really chrooted: QEMU opens the
// jail's files by host path), with a stand-in cgroup v2 hierarchy (this
// host's cgroup v2 offers no cpu or memory controller) and the file the
// double records every API request in. The orchestrator inherits the
// settings and passes them to the doubles.
func firecrackerDouble(t *testing.T, work string) (fc firecrackerdouble.Binaries, jails, cgroups, record string) {
	t.Helper()
	fcDir := t.TempDir()
	os.Chmod(fcDir, 0o755)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	fc, err := firecrackerdouble.Build(ctx, fcDir)
	if err != nil {
		t.Fatal(err)
	}
	jails, err = os.MkdirTemp("", "fajail")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// After a failure the VMs outlive the killed orchestrator (their
		// monitors have their own process group, for adoption): end the
		// ones working in this test's jails.
		for _, pid := range pidsWorkingIn(jails) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		os.RemoveAll(jails)
	})
	os.Chmod(jails, 0o711)
	cgroups = filepath.Join(jails, "cgroup")
	writeFile(t, filepath.Join(cgroups, "cgroup.controllers"), 0o644, "cpuset cpu io memory pids\n")
	writeFile(t, filepath.Join(jails, "mounts"), 0o644, "cgroup2 "+cgroups+" cgroup2 rw,nosuid 0 0\n")
	record = filepath.Join(work, "api-record.jsonl")
	t.Setenv("FCDOUBLE_PROC_MOUNTS", filepath.Join(jails, "mounts"))
	t.Setenv("FCDOUBLE_RECORD", record)
	return fc, jails, cgroups, record
}

// vmRecord is the part of a VM's state record these tests read.
type vmRecord struct {
	PID        int    `json:"pid"`
	Address    string `json:"address"`
	AgentToken string `json:"agent_token"`
}

func readVMRecord(state, id string) (vmRecord, []byte, error) {
	var rec vmRecord
	recs, err := vmstate.ReadRecords(filepath.Join(state, "vms"))
	if err != nil {
		return rec, nil, err
	}
	for _, r := range recs {
		if r.ID == id {
			b, err := json.Marshal(r)
			if err == nil {
				err = json.Unmarshal(b, &rec)
			}
			return rec, b, err
		}
	}
	return rec, nil, fmt.Errorf("vm %s: no record", id)
}

// vmPID is the monitor pid in a VM's record.
func vmPID(t *testing.T, state, id string) int {
	t.Helper()
	rec, b, err := readVMRecord(state, id)
	if err != nil || rec.PID == 0 {
		t.Fatalf("vm %s's record has no pid (%v): %s", id, err, b)
	}
	return rec.PID
}

// vmSlot is a VM's slot: its address's offset in the VMs' network, from
// its record.
func vmSlot(t *testing.T, state, id string, prefix netip.Prefix) int {
	t.Helper()
	rec, b, err := readVMRecord(state, id)
	if err != nil {
		t.Fatalf("vm %s's record: %v", id, err)
	}
	slot, err := slotOf(rec.Address, prefix)
	if err != nil {
		t.Fatalf("vm %s's record: %v: %s", id, err, b)
	}
	return slot
}

// slotOf is addr's offset in prefix.
func slotOf(addr string, prefix netip.Prefix) (int, error) {
	a, err := netip.ParseAddr(addr)
	if err != nil || !a.Is4() || !prefix.Contains(a) {
		return 0, fmt.Errorf("address %q is not in %s", addr, prefix)
	}
	ab, pb := a.As4(), prefix.Masked().Addr().As4()
	return int(binary.BigEndian.Uint32(ab[:]) - binary.BigEndian.Uint32(pb[:])), nil
}

func procUID(t *testing.T, pid int) int {
	t.Helper()
	uid, err := uidOf(pid)
	if err != nil {
		t.Fatal(err)
	}
	return uid
}

// uidOf is the real uid of pid.
func uidOf(pid int) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 1 && f[0] == "Uid:" {
			return strconv.Atoi(f[1])
		}
	}
	return -1, fmt.Errorf("no Uid in /proc/%d/status", pid)
}

// vmmWatch follows the live VMs' VMMs while the test waits: the uid each
// ran as, its slot, whether two ran at once as one user, and the VMs'
// agent tokens (secrets no API request may carry).
type vmmWatch struct {
	state    string
	prefix   netip.Prefix
	uids     map[string]int // vm id -> its VMM's uid
	slots    map[string]int // vm id -> its slot
	tokens   map[string]string
	together int      // looks that found two or more VMMs running
	clashes  []string // VMs seen at once with one uid
}

func newVMMWatch(state string, prefix netip.Prefix) *vmmWatch {
	return &vmmWatch{state: state, prefix: prefix, uids: map[string]int{}, slots: map[string]int{}, tokens: map[string]string{}}
}

// look records the VMMs running now: those whose record has a pid that
// is still that VM's monitor.
func (w *vmmWatch) look() {
	now := map[int]string{} // uid -> vm id
	for id := range vmDirs(w.state) {
		rec, _, err := readVMRecord(w.state, id)
		if err != nil {
			continue
		}
		if rec.AgentToken != "" {
			w.tokens[id] = rec.AgentToken
		}
		if rec.PID == 0 || !firecracker.IsOurs(rec.PID, id) {
			continue
		}
		uid, err := uidOf(rec.PID)
		slot, serr := slotOf(rec.Address, w.prefix)
		if err != nil || serr != nil {
			continue
		}
		w.uids[id], w.slots[id] = uid, slot
		if other, ok := now[uid]; ok {
			w.clashes = append(w.clashes, fmt.Sprintf("vms %s and %s as uid %d", other, id, uid))
		}
		now[uid] = id
	}
	if len(now) >= 2 {
		w.together++
	}
}

func (w *vmmWatch) agentTokens() []string {
	var out []string
	for _, t := range w.tokens {
		out = append(out, t)
	}
	return out
}

// pidsWorkingIn lists the processes whose working directory is under
// dir (the doubles and their QEMUs work in their jails).
func pidsWorkingIn(dir string) []int {
	var out []int
	cwds, _ := filepath.Glob("/proc/[0-9]*/cwd")
	for _, c := range cwds {
		if wd, err := os.Readlink(c); err == nil && strings.HasPrefix(wd, dir+"/") {
			if pid, err := strconv.Atoi(filepath.Base(filepath.Dir(c))); err == nil {
				out = append(out, pid)
			}
		}
	}
	return out
}

func readAPIRecord(t *testing.T, path string) []firecrackerdouble.Record {
	t.Helper()
	recs, err := firecrackerdouble.ReadRecord(path)
	if err != nil {
		t.Fatal(err)
	}
	return recs
}
