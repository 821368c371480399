package qemu

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
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

// TestRestoresOfOneTemplateAreEachTheirOwn: a guest booted until it waits
// on its identity port is saved (SaveState), then four VMs are restored
// from the one state file, each with its own TAP, MAC, directory and
// identity channel, and handed their identity over it (acknowledged by
// the guest). Each reads its own identity and the host's clock; the two
// given a seed (the agent's reseed: RNDADDENTROPY + RNDRESEEDCRNG) read
// different boot ids and random bytes. The two given none are the
// control: what restores share without the reseed.
func TestRestoresOfOneTemplateAreEachTheirOwn(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	r := newWarmRig(t)
	spec := func(name string) vmm.Spec { return r.spec(name) }
	state := r.template(ctx)
	d := r.d

	seeds := map[string]bool{"a": true, "b": true, "c": false, "d": false}
	lines := map[string]string{}
	restored := map[string]vmm.Machine{}
	specs := map[string]vmm.Spec{}
	for name := range seeds {
		s := spec(name)
		s.Restore = state
		s.MAC = "02:00:00:00:01:0" + fmt.Sprint(len(restored)+2)
		r, err := d.Start(ctx, s)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = r.Kill(context.Background()) })
		restored[name], specs[name] = r, s
	}
	for name, seeded := range seeds {
		r := restored[name]
		t0 := time.Now()
		if err := r.(vmm.Warm).Resume(ctx); err != nil {
			t.Fatalf("restore %s: %v; console:\n%s", name, err, readConsole(specs[name].ConsoleLog))
		}
		t.Logf("FIGURE restore %s loaded and resumed in %v", name, time.Since(t0).Round(time.Millisecond))
		id := agentproto.Identity{Config: agentproto.Config{VMID: "vm-" + name}, Now: time.Now()}
		if seeded {
			id.Seed = make([]byte, 64)
			rand.Read(id.Seed)
		}
		b, _ := json.Marshal(id)
		if err := r.(vmm.Warm).SendIdentity(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	re := regexp.MustCompile(`warmguest: vm=(\S+) boot_id=(\S+) uuid=(\S+) clock=(\d+)`)
	for name, r := range restored {
		select {
		case <-r.Done():
		case <-ctx.Done():
			t.Fatalf("restore %s did not end; console:\n%s", name, readConsole(specs[name].ConsoleLog))
		}
		c := readConsole(specs[name].ConsoleLog)
		g := re.FindStringSubmatch(c)
		if g == nil || g[1] != "vm-"+name {
			t.Fatalf("restore %s did not report its own identity; console:\n%s", name, c)
		}
		var clock int64
		fmt.Sscan(g[4], &clock)
		if d := time.Now().Unix() - clock; d < 0 || d > 120 {
			t.Errorf("restore %s: clock %d, %ds from the host's", name, clock, d)
		}
		if strings.Contains(c, "warmguest: waiting") {
			t.Errorf("restore %s booted instead of resuming:\n%s", name, c)
		}
		lines[name] = g[2] + " " + g[3]
		t.Logf("restore %s: %s", name, g[0])
	}
	c, dd := strings.Fields(lines["c"]), strings.Fields(lines["d"])
	if c[0] != dd[0] || c[1] != dd[1] {
		t.Errorf("control: two restores without a reseed read different boot ids or random bytes (%v, %v): the test cannot tell a reseed's effect", c, dd)
	}
	a, b := strings.Fields(lines["a"]), strings.Fields(lines["b"])
	if a[0] == b[0] || a[1] == b[1] {
		t.Errorf("two reseeded restores of one template share their boot id or random bytes: %v, %v", a, b)
	}

	// A truncated state file: Resume fails and QEMU ends; no guest runs.
	whole, _ := os.ReadFile(state)
	half := filepath.Join(t.TempDir(), "half")
	os.WriteFile(half, whole[:len(whole)/2], 0o600)
	s := spec("e")
	s.Restore = half
	m, err := d.Start(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Kill(context.Background())
	if err := m.(vmm.Warm).Resume(ctx); err == nil || !strings.Contains(err.Error(), "QEMU ended loading the saved state") {
		t.Fatalf("a restore from a truncated state: %v; console:\n%s", err, readConsole(s.ConsoleLog))
	} else {
		t.Logf("truncated state: %v; console: %s", err, readConsole(s.ConsoleLog))
	}
	select {
	case <-m.Done():
	case <-time.After(30 * time.Second):
		t.Error("QEMU still runs after failing to load a truncated state")
	}
}

// warmRig is the warm-start tests' host: the warm guest's archive, the
// driver, and VM specs with identity channels.
type warmRig struct {
	t               testing.TB
	d               *Driver
	kernel, archive string
}

func newWarmRig(t testing.TB) *warmRig {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("needs root: the guests' TAPs (make test runs as root)")
	}
	r := &warmRig{t: t, d: &Driver{Binary: "qemu-system-x86_64", Accel: AccelTCG}, kernel: hostKernel(t)}
	r.archive = filepath.Join(t.TempDir(), "warm.cpio")
	warmInitramfs(t, r.kernel, r.archive)
	return r
}

// spec is VM name's: its own directory, TAP, console and identity socket.
func (r *warmRig) spec(name string) vmm.Spec {
	dir := r.t.TempDir()
	return vmm.Spec{
		ID: fmt.Sprintf("qwarm%s%d", name, os.Getpid()), Dir: dir, Kernel: r.kernel, Initramfs: r.archive,
		VCPUs: 1, MemoryMiB: 128, TAP: tap(r.t, "w"+name), MAC: "02:00:00:00:01:01",
		ConsoleLog: filepath.Join(dir, "console.log"), Identity: filepath.Join(dir, "identity.sock"),
	}
}

// template boots a warm guest until it waits on its identity port, saves
// it and returns the state file.
func (r *warmRig) template(ctx context.Context) string {
	t := r.t
	tpl := r.spec("t")
	m, err := r.d.Start(ctx, tpl)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Kill(context.Background())
	waitConsole(t, m, tpl.ConsoleLog, "warmguest: waiting for identity on \"/dev/vport", 4*time.Minute)
	state := filepath.Join(t.TempDir(), "state")
	t0 := time.Now()
	if err := m.(vmm.Warm).SaveState(ctx, state); err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(state)
	t.Logf("FIGURE template saved in %v, %d bytes", time.Since(t0).Round(time.Millisecond), st.Size())
	return state
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
// with the kernel's virtio-serial modules in /mod.
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
	for _, m := range []string{"virtio/virtio_ring.ko", "virtio/virtio.ko", "virtio/virtio_mmio.ko", "char/virtio_console.ko"} {
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
