package qemu

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
	"github.com/nixos-fireactions/nixos-fireactions/initramfs"
	"github.com/nixos-fireactions/nixos-fireactions/vmm"
)

// stepWait bounds each wait of the warm tests on a restored guest: under
// load a resume, an acknowledgement or a report takes seconds, so a guest
// that hangs fails the test within it, with its console.
const stepWait = 60 * time.Second

// bootWait bounds a template's cold boot to its wait for the identity:
// a kernel's boot under TCG and load takes longer than one step.
const bootWait = 2 * stepWait

// TestRestoresOfOneTemplateAreEachTheirOwn: a guest booted until it waits
// on its identity port is saved (SaveState), then four VMs are restored
// from the one state file, each with its own TAP, MAC, directory and
// identity channel, and handed their identity over it (acknowledged by
// the guest). Each reads its own identity and the host's clock. The two
// given a seed and a MAC (the agent's reseed: RNDADDENTROPY +
// RNDRESEEDCRNG; its SetMAC) read different boot ids and random bytes and
// have their own MAC. The two given neither are the positive control:
// they still have the MAC the template printed before it was saved — what
// every restore shares unless its identity replaces it, seen by the same
// probe. (Two restores without a reseed are no control for the random
// bytes: the kernel mixes interrupts and timings in and diverges on its
// own, sometimes.)
func TestRestoresOfOneTemplateAreEachTheirOwn(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	r := newWarmRig(t)
	state, tpl := r.template(ctx)
	tplMAC := regexp.MustCompile(`warmguest: template mac=(\S+)`).FindStringSubmatch(tpl)
	if tplMAC == nil || tplMAC[1] == "none" {
		t.Fatalf("the template printed no MAC before it was saved; console:\n%s", tpl)
	}
	given := map[string]bool{"a": true, "b": true, "c": false, "d": false}
	macs := map[string]string{"a": "02:00:00:00:02:0a", "b": "02:00:00:00:02:0b"}
	seen := map[string][]string{}
	for _, name := range []string{"a", "b", "c", "d"} {
		m, s := r.restore(ctx, name, state)
		id := agentproto.Identity{Config: agentproto.Config{VMID: "vm-" + name}, Now: time.Now()}
		if given[name] {
			id.Seed = make([]byte, 64)
			rand.Read(id.Seed)
			id.MAC = macs[name]
		}
		seen[name] = r.hand(ctx, m, s, id)
		if c := readConsole(s.ConsoleLog); strings.Contains(c, "warmguest: waiting") {
			t.Errorf("restore %s booted instead of resuming:\n%s", name, c)
		}
	}
	for name, g := range seen {
		var clock int64
		fmt.Sscan(g[4], &clock)
		if d := time.Now().Unix() - clock; d < 0 || d > 120 {
			t.Errorf("restore %s: clock %d, %ds from the host's", name, clock, d)
		}
		t.Logf("restore %s: %s", name, g[0])
	}
	for _, name := range []string{"c", "d"} {
		if seen[name][1] != tplMAC[1] {
			t.Errorf("control: restore %s, given no MAC, reads %s, not the template's %s: the probe cannot see what restores share", name, seen[name][1], tplMAC[1])
		}
	}
	for _, name := range []string{"a", "b"} {
		if seen[name][1] != macs[name] {
			t.Errorf("restore %s has MAC %s, not its own %s", name, seen[name][1], macs[name])
		}
	}
	a, b := seen["a"], seen["b"]
	if a[2] == b[2] || a[3] == b[3] {
		t.Errorf("two reseeded restores of one template share their boot id or random bytes: %v, %v", a[2:4], b[2:4])
	}
	t.Logf("without a reseed: c %v, d %v (equal: %v)", seen["c"][2:4], seen["d"][2:4], seen["c"][2] == seen["d"][2])
}

// TestTheTemplateHoldsNoSecret: a restore handed a runner credential in
// its identity has it in memory — its own state, saved while it idles,
// holds it (the positive control: the probe finds a secret where one
// is; its RAM, a private mapping, is in its stream) — and the template's
// state and memory files, from which every VM restores, do not.
func TestTheTemplateHoldsNoSecret(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	r := newWarmRig(t)
	state, _ := r.template(ctx)
	secret := make([]byte, 24)
	rand.Read(secret)
	cred := fmt.Sprintf("runner-credential-%x", secret)
	m, s := r.restore(ctx, "s", state)
	id := agentproto.Identity{
		Config: agentproto.Config{VMID: "vm-s", Hostname: "idle", Runner: agentproto.Runner{
			Files: []agentproto.File{{Path: "/home/runner/.runner", Mode: 0o600, Content: []byte(cred)}}}},
		Seed: make([]byte, 64), Now: time.Now(),
	}
	rand.Read(id.Seed)
	r.hand(ctx, m, s, id)
	dump := filepath.Join(t.TempDir(), "dump")
	step, stop := context.WithTimeout(ctx, 2*stepWait)
	defer stop()
	if err := m.(vmm.Warm).SaveState(step, dump); err != nil {
		t.Fatalf("save the restored VM: %v", err)
	}
	// The line carries the file as base64; the guest decodes it.
	forms := [][]byte{[]byte(cred), []byte(base64.StdEncoding.EncodeToString([]byte(cred)))}
	if !holdsAny(t, dump, forms) {
		t.Fatal("control: the restored VM's own state does not hold the credential it was handed: the probe cannot find one")
	}
	if holdsAny(t, state, forms) {
		t.Fatal("the template's state holds a restore's runner credential")
	}
	if holdsAny(t, r.memory, forms) {
		t.Fatal("the template's memory file holds a restore's runner credential")
	}
}

// holdsAny reads file and says whether it contains any of forms.
func holdsAny(t *testing.T, file string, forms [][]byte) bool {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range forms {
		if bytes.Contains(b, f) {
			return true
		}
	}
	return false
}

// TestARestoreFromABadStateFailsWithOurError: a truncated state file ends
// QEMU as it loads it and Resume says so with ErrStateNotLoaded (QEMU's
// own wording varies and is on the console); a missing one fails Start.
// No guest runs from either. The whole state restores (the control).
func TestARestoreFromABadStateFailsWithOurError(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	r := newWarmRig(t)
	state, _ := r.template(ctx)

	whole, err := os.ReadFile(state)
	if err != nil {
		t.Fatal(err)
	}
	half := filepath.Join(t.TempDir(), "half")
	if err := os.WriteFile(half, whole[:len(whole)/2], 0o600); err != nil {
		t.Fatal(err)
	}
	s := r.spec("e")
	s.Restore, s.MemoryFile = half, r.memory
	m, err := r.d.Start(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Kill(context.Background())
	step, stop := context.WithTimeout(ctx, stepWait)
	err = m.(vmm.Warm).Resume(step)
	stop()
	if !errors.Is(err, ErrStateNotLoaded) {
		t.Fatalf("a restore from a truncated state: %v, want ErrStateNotLoaded; console:\n%s", err, readConsole(s.ConsoleLog))
	}
	t.Logf("truncated state: %v; console: %s", err, readConsole(s.ConsoleLog))
	select {
	case <-m.Done():
	case <-time.After(30 * time.Second):
		t.Error("QEMU still runs after failing to load a truncated state")
	}

	s = r.spec("f")
	s.Restore = filepath.Join(t.TempDir(), "gone")
	if m, err := r.d.Start(ctx, s); !errors.Is(err, fs.ErrNotExist) || !strings.Contains(fmt.Sprint(err), "saved state") {
		if err == nil {
			m.Kill(context.Background())
		}
		t.Fatalf("a restore from a missing state: %v, want an error naming the saved state", err)
	}

	m, s = r.restore(ctx, "g", state)
	r.hand(ctx, m, s, agentproto.Identity{Config: agentproto.Config{VMID: "vm-g"}, Now: time.Now()})
}

// warmRig is the warm-start tests' host: the warm guest's archive, the
// driver, and VM specs with identity channels.
type warmRig struct {
	t               testing.TB
	d               *Driver
	kernel, archive string
	// drives, when set, are VM name's drives (an image root's).
	drives func(name string) []vmm.Drive
	// memory is the guest RAM file of the last template (template), which
	// restore maps private; "" before a template was saved.
	memory string
}

func newWarmRig(t testing.TB) *warmRig {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("needs root: the guests' TAPs (make test runs as root)")
	}
	khz, err := HostTSCkHz() // as the daemon tells its TCG guests
	if err != nil {
		t.Fatal(err)
	}
	r := &warmRig{t: t, d: &Driver{Binary: "qemu-system-x86_64", Accel: AccelTCG, TSCkHz: khz}, kernel: hostKernel(t)}
	r.archive = filepath.Join(t.TempDir(), "warm.cpio")
	warmInitramfs(t, r.kernel, r.archive)
	return r
}

// spec is VM name's: its own directory, TAP, console and identity socket.
func (r *warmRig) spec(name string) vmm.Spec {
	dir := r.t.TempDir()
	s := vmm.Spec{
		ID: fmt.Sprintf("qwarm%s%d", name, os.Getpid()), Dir: dir, Kernel: r.kernel, Initramfs: r.archive,
		VCPUs: 1, MemoryMiB: 128, TAP: tap(r.t, "w"+name), MAC: "02:00:00:00:01:01",
		ConsoleLog: filepath.Join(dir, "console.log"), Identity: filepath.Join(dir, "identity.sock"),
	}
	if r.drives != nil {
		s.Drives = r.drives(name)
	}
	return s
}

// restore starts VM name from state and resumes it, within stepWait.
func (r *warmRig) restore(ctx context.Context, name, state string) (vmm.Machine, vmm.Spec) {
	t := r.t
	t.Helper()
	s := r.spec(name)
	s.Restore, s.MemoryFile = state, r.memory
	m, err := r.d.Start(ctx, s)
	if err != nil {
		t.Fatalf("restore %s: %v", name, err)
	}
	t.Cleanup(func() { _ = m.Kill(context.Background()) })
	step, stop := context.WithTimeout(ctx, stepWait)
	defer stop()
	t0 := time.Now()
	if err := m.(vmm.Warm).Resume(step); err != nil {
		t.Fatalf("restore %s: %v; console:\n%s", name, err, readConsole(s.ConsoleLog))
	}
	t.Logf("FIGURE restore %s loaded and resumed in %v", name, time.Since(t0).Round(time.Millisecond))
	return m, s
}

// hand sends a restored guest its identity and waits (each within
// stepWait) for the acknowledgement and its report line, returned as
// matched: the line, MAC, boot id, random uuid and clock.
func (r *warmRig) hand(ctx context.Context, m vmm.Machine, s vmm.Spec, id agentproto.Identity) []string {
	t := r.t
	t.Helper()
	b, err := json.Marshal(id)
	if err != nil {
		t.Fatal(err)
	}
	step, stop := context.WithTimeout(ctx, stepWait)
	defer stop()
	if err := m.(vmm.Warm).SendIdentity(step, b); err != nil {
		t.Fatalf("identity of %s: %v; console:\n%s", id.Config.VMID, err, readConsole(s.ConsoleLog))
	}
	re := regexp.MustCompile(`warmguest: vm=` + regexp.QuoteMeta(id.Config.VMID) + ` mac=(\S+) boot_id=(\S+) uuid=(\S+) clock=(\d+)`)
	for {
		if g := re.FindStringSubmatch(readConsole(s.ConsoleLog)); g != nil {
			return g
		}
		select {
		case <-step.Done():
			t.Fatalf("%s did not report its identity within %v; console:\n%s", id.Config.VMID, stepWait, readConsole(s.ConsoleLog))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// template boots a warm guest with its RAM in a file (r.memory) until it
// waits on its identity port, saves it and returns the state file and
// the template's console.
func (r *warmRig) template(ctx context.Context) (string, string) {
	t := r.t
	tpl := r.spec("t")
	tpl.MemoryFile = filepath.Join(t.TempDir(), "memory")
	r.memory = tpl.MemoryFile
	m, err := r.d.Start(ctx, tpl)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Kill(context.Background())
	waitConsole(t, m, tpl.ConsoleLog, "warmguest: waiting for identity on \"/dev/vport", bootWait)
	state := filepath.Join(t.TempDir(), "state")
	t0 := time.Now()
	step, stop := context.WithTimeout(ctx, 2*stepWait)
	defer stop()
	if err := m.(vmm.Warm).SaveState(step, state); err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(state)
	t.Logf("FIGURE template saved in %v, %d bytes", time.Since(t0).Round(time.Millisecond), st.Size())
	return state, readConsole(tpl.ConsoleLog)
}

// waitConsole waits for want on m's console.
func waitConsole(t testing.TB, m vmm.Machine, log, want string, within time.Duration) {
	t.Helper()
	for deadline := time.Now().Add(within); !strings.Contains(readConsole(log), want); time.Sleep(50 * time.Millisecond) {
		select {
		case <-m.Done():
			t.Fatalf("QEMU ended (%v) before %q; console:\n%s", m.Err(), want, readConsole(log))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %q within %v; console:\n%s", want, within, readConsole(log))
		}
	}
}

// warmInitramfs writes an initramfs whose /init is testdata/warmguest,
// with the kernel's virtio-serial, virtio-net, virtio-blk and overlay
// modules in /mod.
func warmInitramfs(t testing.TB, kernel, dst string) {
	t.Helper()
	bin := buildGuest(t, "./testdata/warmguest")
	var buf bytes.Buffer
	w := initramfs.NewWriter(&buf)
	if err := w.CopyFile("init", 0o755, 0, 0, bin); err != nil {
		t.Fatal(err)
	}
	w.Dir("mod", 0o755, 0, 0)
	lib := "/lib/modules/" + strings.TrimPrefix(filepath.Base(kernel), "vmlinuz-") + "/kernel/drivers/"
	var order []string
	for _, m := range []string{"virtio/virtio_ring.ko", "virtio/virtio.ko", "virtio/virtio_mmio.ko", "char/virtio_console.ko",
		"../net/core/failover.ko", "net/net_failover.ko", "net/virtio_net.ko", "block/virtio_blk.ko", "../fs/overlayfs/overlay.ko"} {
		if _, err := os.Stat(lib + m); err != nil {
			continue // built in
		}
		if err := w.CopyFile("mod/"+filepath.Base(m), 0o644, 0, 0, lib+m); err != nil {
			t.Fatal(err)
		}
		order = append(order, filepath.Base(m))
	}
	w.File("mod/order", 0o644, 0, 0, []byte(strings.Join(order, "\n")))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// tap creates a TAP named for the test and name, removed after.
func tap(t testing.TB, name string) string {
	t.Helper()
	dev := fmt.Sprintf("fq%s%d", name, os.Getpid()%1000000)
	if out, err := exec.Command("ip", "tuntap", "add", "dev", dev, "mode", "tap").CombinedOutput(); err != nil {
		t.Fatalf("create tap: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "link", "del", dev).Run() })
	return dev
}
