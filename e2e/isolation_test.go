//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
	"github.com/nixos-fireactions/nixos-fireactions/initramfs"
	"github.com/nixos-fireactions/nixos-fireactions/netplan"
	"github.com/nixos-fireactions/nixos-fireactions/pool"
	"github.com/nixos-fireactions/nixos-fireactions/vmm"
	"github.com/nixos-fireactions/nixos-fireactions/vmm/qemu"
	"github.com/nixos-fireactions/nixos-fireactions/warmstart"
)

// probeGuest is one test guest running netprobe.
type probeGuest struct {
	name   string
	bridge netplan.Bridge
	rules  netplan.Rules
	ip     netip.Addr
	checks []map[string]string
	// want is what each check must give: "ok" or "blocked".
	want map[string]string
}

// isolationRun is one run of the isolation probes: the prefix of its
// namespace, bridge and TAP names, its two bridges' /24s (first three
// octets), and whether its guests are booted or restored from a template.
type isolationRun struct {
	prefix     string
	netA, netB string
	restored   bool
}

// TestGuestIsolation boots two guests on one bridge and a third on
// another, each with its own rules as two orchestrators would have, and
// proves from inside the guests: the internet side works; other guests
// (same bridge and across, TCP and ICMP), closed host ports and the
// metadata range do not; a guest that forges its IP or MAC gets nothing
// through. Each guest must get the host's start signal (no check runs
// before every guest listens), and a check the probe could not set up
// reads "error", never "blocked". The forged frames are seen leaving the
// guest on its TAP and never reach the host side of the bridge (the
// positive control of the spoof checks).
func TestGuestIsolation(t *testing.T) {
	guestIsolation(t, isolationRun{prefix: "fa", netA: "10.212.0", netB: "10.213.0"})
}

// TestGuestIsolationOfRestoredVMs runs the same probes, with the same
// controls, in three guests restored from one warm-start template (the
// real agent booted with a template's config, saved while it waits for
// its identity), each handed its identity by the pool's handover
// (pool.SendIdentity): what a restored VM reaches is what a booted one
// does. Each guest's console proves it was restored, not booted: it holds
// the agent's "identity of <vm> read" and not the template's wait, which
// a guest that booted the template's archive prints again.
func TestGuestIsolationOfRestoredVMs(t *testing.T) {
	guestIsolation(t, isolationRun{prefix: "wi", netA: "10.190.0", netB: "10.191.0", restored: true})
}

func guestIsolation(t *testing.T, iso isolationRun) {
	requireRoot(t)
	cache := cacheDir()
	kernel, modules := hostKernel(t)
	bin := buildBinaries(t)
	work := t.TempDir()

	// The internet: a namespace behind a veth, with a web server and a
	// stand-in for a cloud metadata service.
	host := newNetns(t, fmt.Sprintf("%siso%d", iso.prefix, os.Getpid()%100000))
	inet := newNetns(t, fmt.Sprintf("%sinet%d", iso.prefix, os.Getpid()%100000))
	run(t, "ip", "-n", host.name, "link", "add", "vinet", "type", "veth", "peer", "name", "vhost", "netns", inet.name)
	run(t, "ip", "-n", host.name, "addr", "add", "198.18.0.1/24", "dev", "vinet")
	run(t, "ip", "-n", host.name, "link", "set", "vinet", "up")
	run(t, "ip", "-n", inet.name, "addr", "add", "198.18.0.2/24", "dev", "vhost")
	run(t, "ip", "-n", inet.name, "addr", "add", "169.254.169.254/32", "dev", "vhost")
	run(t, "ip", "-n", inet.name, "link", "set", "vhost", "up")
	run(t, "ip", "-n", host.name, "route", "add", "169.254.169.254/32", "via", "198.18.0.2")
	serveIn(t, inet, "198.18.0.2:8080", http.NotFoundHandler())
	serveIn(t, inet, "169.254.169.254:80", http.NotFoundHandler())

	// The host: the allowed agent port with the start signal, and a port
	// guests must not reach.
	var goSignal atomic.Bool
	serveIn(t, host, ":8089", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/go" && !goSignal.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	serveIn(t, host, ":9999", http.NotFoundHandler())

	mkBridge := func(name, cidr string) (netplan.Bridge, netplan.Rules) {
		p := netip.MustParsePrefix(cidr)
		b := netplan.Bridge{Name: name, Prefix: p, Gateway: p.Addr().Next(), MTU: 1500}
		r := netplan.Rules{Bridge: name, Prefix: p, Gateway: b.Gateway, NAT: true, HostTCP: []int{8089}}
		inNetns(t, host, func() error {
			if err := b.Ensure(); err != nil {
				return err
			}
			return r.Apply(context.Background())
		})
		return b, r
	}
	brA, rulesA := mkBridge(iso.prefix+"isoa0", iso.netA+".0/24")
	brB, rulesB := mkBridge(iso.prefix+"isob0", iso.netB+".0/24")
	run(t, "ip", "netns", "exec", host.name, "sysctl", "-qw", "net.ipv4.ip_forward=1")

	onA, onB := func(host string) string { return iso.netA + "." + host }, func(host string) string { return iso.netB + "." + host }
	forgedIP, forgedMAC := netip.MustParseAddr(onA("50")), "02:de:ad:be:ef:01"
	a1 := &probeGuest{name: "a1", bridge: brA, rules: rulesA, ip: netip.MustParseAddr(onA("2"))}
	a2 := &probeGuest{name: "a2", bridge: brA, rules: rulesA, ip: netip.MustParseAddr(onA("3"))}
	b1 := &probeGuest{name: "b1", bridge: brB, rules: rulesB, ip: netip.MustParseAddr(onB("2"))}
	check := func(g *probeGuest, name, kind, addr, forge, want string) {
		g.checks = append(g.checks, map[string]string{"name": name, "kind": kind, "addr": addr, "forge": forge})
		if g.want == nil {
			g.want = map[string]string{}
		}
		g.want[name] = want
	}
	internet, metadata := "198.18.0.2:8080", "169.254.169.254:80"
	check(a1, "internet", "tcp", internet, "", "ok")
	check(a1, "metadata", "tcp", metadata, "", "blocked")
	check(a1, "same-bridge-tcp", "tcp", onA("3:7000"), "", "blocked")
	check(a1, "same-bridge-ping", "ping", onA("3"), "", "blocked")
	check(a1, "cross-bridge-tcp", "tcp", onB("2:7000"), "", "blocked")
	check(a1, "cross-bridge-ping", "ping", onB("2"), "", "blocked")
	check(a1, "host-allowed", "tcp", onA("1:8089"), "", "ok")
	check(a1, "host-closed", "tcp", onA("1:9999"), "", "blocked")
	check(a1, "forged-ip", "spoof-ip", internet, forgedIP.String()+"/24", "blocked")
	check(a1, "forged-mac", "spoof-mac", onA("1:8089"), forgedMAC, "blocked")
	check(a1, "internet-again", "tcp", internet, "", "ok")
	check(a2, "internet", "tcp", internet, "", "ok")
	check(a2, "same-bridge-tcp", "tcp", onA("2:7000"), "", "blocked")
	check(b1, "internet", "tcp", internet, "", "ok")
	check(b1, "cross-bridge-tcp", "tcp", onA("2:7000"), "", "blocked")
	check(b1, "cross-bridge-ping", "ping", onA("3"), "", "blocked")
	check(b1, "host-closed", "tcp", onB("1:9999"), "", "blocked")
	guests := []*probeGuest{a1, a2, b1}

	archive := buildProbeBoot(t, cache, bin, work, modules)
	machines := map[string]vmm.Machine{}
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for _, g := range guests {
			out, _ := exec.Command("ls", "-la", filepath.Join(work, g.name)).CombinedOutput()
			t.Logf("%s dir:\n%s", g.name, out)
			if m := machines[g.name]; m != nil {
				st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", m.PID()))
				t.Logf("%s pid %d: %.200s err=%v", g.name, m.PID(), st, m.Err())
			}
			b, _ := os.ReadFile(filepath.Join(work, g.name, "console.log"))
			if len(b) > 4000 {
				b = b[len(b)-4000:]
			}
			t.Logf("console of %s:\n%s", g.name, b)
		}
	})
	var a1TAP, brACap *frameCapture
	accel, _ := qemu.DetectAccel(context.Background(), "qemu-system-x86_64", "/dev/kvm")
	driver := &qemu.Driver{Binary: "qemu-system-x86_64", Accel: accel}
	var tpl isolationTemplate
	if iso.restored {
		tpl = buildIsolationTemplate(t, host, driver, brA, iso.prefix+"tpliso", kernel, archive, modules, filepath.Join(work, "template"))
	}
	for _, g := range guests {
		g := g
		tap := iso.prefix + g.name + "iso"
		mac := netplan.NewMAC()
		dir := filepath.Join(work, g.name)
		os.MkdirAll(dir, 0o700)
		plan, _ := json.Marshal(map[string]any{
			"listen": ":7000", "go": "http://" + g.bridge.Gateway.String() + ":8089/go", "go_wait_s": 300,
			"gateway": g.bridge.Gateway.String(), "checks": g.checks,
		})
		cfg := agentproto.Config{
			VMID: g.name, Hostname: g.name, Modules: initramfsModules(t, modules),
			Network: agentproto.Network{Interface: "eth0", Address: netip.PrefixFrom(g.ip, 24).String(), Gateway: g.bridge.Gateway.String(), MTU: 1500},
			Report:  agentproto.Reporter{URL: "http://" + g.bridge.Gateway.String() + ":8089" + agentproto.ReportPath, Token: "t"},
			Runner: agentproto.Runner{
				Forge: "test", User: "runner", UID: 1000, GID: 1000, Home: "/home/runner",
				Command: []string{"/bin/netprobe", "/home/runner/plan.json"},
				Files:   []agentproto.File{{Path: "/home/runner/plan.json", Mode: 0o644, Content: plan}},
			},
		}
		inNetns(t, host, func() error {
			if err := g.bridge.AddTAP(tap); err != nil {
				return err
			}
			return g.rules.AddVM(netplan.VM{TAP: tap, MAC: mac, IP: g.ip})
		})
		if g == a1 {
			// What leaves a1, before the bridge judges it, and what of
			// it reaches the host side of the bridge.
			a1TAP, brACap = captureFrames(t, host, tap), captureFrames(t, host, brA.Name)
		}
		spec := vmm.Spec{
			ID: iso.prefix + "iso-" + g.name, Dir: dir, Kernel: kernel, VCPUs: 1, MemoryMiB: 256,
			TAP: tap, MAC: mac, ConsoleLog: filepath.Join(dir, "console.log"),
		}
		if iso.restored {
			machines[g.name] = tpl.restore(t, host, driver, spec, cfg)
			continue
		}
		spec.Initramfs = filepath.Join(dir, "initramfs.cpio")
		if err := initramfs.WriteVM(spec.Initramfs, archive, cfg); err != nil {
			t.Fatal(err)
		}
		machines[g.name] = startIn(t, host, driver, spec)
	}

	// Every guest listens before any probes: the host reaches each (a
	// positive control: the blocked checks below are not just guests
	// that were not up yet).
	c := host.httpClient()
	_ = c
	for _, g := range guests {
		addr := net.JoinHostPort(g.ip.String(), "7000")
		waitFor(t, 3*time.Minute, g.name+" listening", func() bool {
			conn, err := host.dial(context.Background(), "tcp", addr)
			if err == nil {
				conn.Close()
				return true
			}
			return false
		})
	}
	goSignal.Store(true)
	signalled := time.Now()

	line := regexp.MustCompile(`NETPROBE (\S+) (ok|blocked|error) ?(.*)`)
	for _, g := range guests {
		console := filepath.Join(work, g.name, "console.log")
		waitFor(t, 4*time.Minute, g.name+" done", func() bool {
			b, _ := os.ReadFile(console)
			return strings.Contains(string(b), "NETPROBE done ")
		})
		b, _ := os.ReadFile(console)
		if m := regexp.MustCompile(`NETPROBE go ok after (\S+)`).FindStringSubmatch(string(b)); m == nil {
			t.Fatalf("%s: no start signal reached the probe; no check ran on it", g.name)
		} else {
			t.Logf("%s: start signal after %s of waiting; done %s after the host gave it", g.name, m[1], time.Since(signalled).Round(time.Second))
		}
		if !strings.Contains(string(b), "NETPROBE done ok") {
			t.Fatalf("%s: the probe did not finish its checks", g.name)
		}
		// Restored, not booted: the agent read its identity, and never
		// waited for one in this VM (a guest booting the template's
		// archive would; the template's console holds the wait).
		readID := strings.Contains(string(b), "identity of "+g.name+" read: RNG reseeded")
		if waited := strings.Contains(string(b), pool.TemplateWaiting); iso.restored && (!readID || waited) {
			t.Errorf("%s was not restored from the template (identity read: %v, waited as a template: %v)", g.name, readID, waited)
		} else if !iso.restored && readID {
			t.Errorf("%s, booted cold, read an identity", g.name)
		}
		got := map[string]string{}
		for _, m := range line.FindAllStringSubmatch(string(b), -1) {
			got[m[1]] = m[2]
			if _, ok := g.want[m[1]]; ok {
				t.Logf("%s %-18s %-7s %s", g.name, m[1], m[2], m[3])
			}
		}
		for name, want := range g.want {
			if got[name] != want {
				t.Errorf("%s: %s = %q, want %q", g.name, name, got[name], want)
			}
		}
	}
	// Positive control of the spoof checks: the forged frames did leave
	// a1 (seen on its TAP), so "blocked" means the bridge dropped them:
	// none reached the host side of the bridge, where a1's own frames do.
	mac, _ := net.ParseMAC(forgedMAC)
	for _, c := range []struct {
		what  string
		match func([]byte) bool
	}{{"forged MAC " + forgedMAC, fromMAC(mac)}, {"forged IP " + forgedIP.String(), fromIPv4(forgedIP)}} {
		left, arrived := a1TAP.count(c.match), brACap.count(c.match)
		t.Logf("a1 frames from the %s: %d on its TAP, %d on the bridge's host side", c.what, left, arrived)
		if left == 0 {
			t.Errorf("positive control: no frame from the %s left a1: its spoof check proves nothing", c.what)
		}
		if arrived != 0 {
			t.Errorf("%d frames from the %s reached the host side of the bridge", arrived, c.what)
		}
	}
	if n := brACap.count(fromIPv4(a1.ip)); n == 0 {
		t.Errorf("positive control: none of a1's own frames seen on the bridge's host side: the capture there is blind")
	}

	for name, m := range machines {
		select {
		case <-m.Done():
		case <-time.After(time.Minute):
			t.Errorf("guest %s did not power off", name)
		}
	}
}

// startIn starts spec's VM from a thread in ns (its TAP is there) and
// kills it when the test ends.
func startIn(t *testing.T, ns *testNetns, driver vmm.Hypervisor, spec vmm.Spec) vmm.Machine {
	t.Helper()
	var m vmm.Machine
	inNetns(t, ns, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		var err error
		m, err = driver.Start(ctx, spec)
		return err
	})
	t.Cleanup(func() { _ = m.Kill(context.Background()) })
	return m
}

// isolationTemplate is a warm-start template of the probe guests: the
// saved state, its guest RAM file (restores map it private, as the
// pool's do) and the credential-free initramfs it booted.
type isolationTemplate struct{ state, memory, initramfs string }

// buildIsolationTemplate boots the probe guests' boot archive with a
// template's config (modules only: no address, hostname or token) on a
// TAP of br that no rule admits, as the pool does, waits for its agent to
// wait for its identity, saves it into dir and ends it.
func buildIsolationTemplate(t *testing.T, ns *testNetns, driver *qemu.Driver, br netplan.Bridge, tap, kernel, archive, modules, dir string) isolationTemplate {
	t.Helper()
	os.MkdirAll(dir, 0o700)
	tpl := isolationTemplate{state: filepath.Join(dir, "state"), memory: filepath.Join(dir, warmstart.MemoryFile), initramfs: filepath.Join(dir, "initramfs.cpio")}
	if err := initramfs.WriteVM(tpl.initramfs, archive, agentproto.Config{Template: true, Modules: initramfsModules(t, modules)}); err != nil {
		t.Fatal(err)
	}
	inNetns(t, ns, func() error { return br.AddTAP(tap) })
	t.Cleanup(func() {
		if b, _ := os.ReadFile(filepath.Join(dir, "console.log")); t.Failed() {
			t.Logf("console of the template:\n%s", b)
		}
	})
	t0 := time.Now()
	spec := vmm.Spec{
		ID: tap, Dir: dir, Kernel: kernel, Initramfs: tpl.initramfs, VCPUs: 1, MemoryMiB: 256,
		TAP: tap, MAC: netplan.NewMAC(), ConsoleLog: filepath.Join(dir, "console.log"), Identity: filepath.Join(dir, "identity.sock"),
		MemoryFile: tpl.memory,
	}
	m := startIn(t, ns, driver, spec)
	waitFor(t, 3*time.Minute, "the template waiting for its identity", func() bool {
		b, _ := os.ReadFile(spec.ConsoleLog)
		return strings.Contains(string(b), pool.TemplateWaiting)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := m.(vmm.Warm).SaveState(ctx, tpl.state); err != nil {
		t.Fatalf("save the template: %v", err)
	}
	if err := m.Kill(ctx); err != nil && !errors.Is(err, vmm.ErrKilled) {
		t.Logf("end the template VM: %v", err)
	}
	t.Logf("FIGURE template booted and saved in %s", time.Since(t0).Round(100*time.Millisecond))
	return tpl
}

// restore starts spec's VM from the template with its own TAP, MAC,
// directory and identity channel, and hands it cfg by the pool's own
// handover (resume, then the identity with a fresh seed and the clock).
func (tpl isolationTemplate) restore(t *testing.T, ns *testNetns, driver vmm.Hypervisor, spec vmm.Spec, cfg agentproto.Config) vmm.Machine {
	t.Helper()
	spec.Restore, spec.MemoryFile, spec.Initramfs = tpl.state, tpl.memory, tpl.initramfs
	spec.Identity = filepath.Join(spec.Dir, "identity.sock")
	t0 := time.Now()
	m := startIn(t, ns, driver, spec)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := pool.SendIdentity(ctx, m, spec.MAC, cfg); err != nil {
		b, _ := os.ReadFile(spec.ConsoleLog)
		t.Fatalf("restore %s: %v; console:\n%s", spec.ID, err, b)
	}
	t.Logf("FIGURE %s restored and handed its identity in %s", spec.ID, time.Since(t0).Round(10*time.Millisecond))
	return m
}

// buildProbeBoot writes the pool boot archive: the busybox root, netprobe
// setuid root, the agent as /init and the virtio modules.
func buildProbeBoot(t *testing.T, cache, bin, work, modules string) string {
	t.Helper()
	root := filepath.Join(work, "root.cpio.gz")
	buildGuestRoot(t, cache, root)
	probe := filepath.Join(work, "netprobe")
	cmd := exec.Command("go", "build", "-o", probe, "./netprobe")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build netprobe: %v\n%s", err, out)
	}
	// Linux takes archives end to end: append one with netprobe, at a
	// 4-byte boundary as the kernel looks for it.
	f, err := os.OpenFile(root, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := f.Stat(); st.Size()%4 != 0 {
		f.Write(make([]byte, 4-st.Size()%4))
	}
	w := initramfs.NewWriter(f)
	if err := w.CopyFile("/bin/netprobe", 0o4755, 0, 0, probe); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	mods, err := initramfs.ResolveModules(modules, probeModules())
	if err != nil {
		t.Fatal(err)
	}
	archive := filepath.Join(work, "boot.cpio")
	if err := (initramfs.Boot{RootArchive: root, Agent: filepath.Join(bin, "fireactions-agent"), Modules: mods}).WritePool(archive); err != nil {
		t.Fatal(err)
	}
	return archive
}

// probeModules are the probe guests' modules: the network's, and the
// identity port's driver a restored guest's agent waits on.
func probeModules() []string { return []string{"virtio_mmio", "virtio_net", "virtio_console"} }

func initramfsModules(t *testing.T, modules string) []string {
	mods, err := initramfs.ResolveModules(modules, probeModules())
	if err != nil {
		t.Fatal(err)
	}
	return initramfs.GuestPaths(mods)
}

// serveIn serves h on addr inside ns until the test ends.
func serveIn(t *testing.T, ns *testNetns, addr string, h http.Handler) {
	t.Helper()
	ln, err := ns.listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen %s in %s: %v", addr, ns.name, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
}
