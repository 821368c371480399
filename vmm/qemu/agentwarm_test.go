package qemu

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
	"github.com/nixos-fireactions/nixos-fireactions/initramfs"
	"github.com/nixos-fireactions/nixos-fireactions/vmm"
)

// TestTheRealAgentRestoresAsTwoVMs: the real agent (cmd/fireactions-agent)
// boots as a template (agentproto.Config.Template: modules only, no
// address, runner or credential), is saved while it waits for its
// identity, and two VMs are restored from it. Each is handed its own
// identity — address, MAC, hostname, report token, runner credential —
// and each then reports, from its own address and MAC and with its own
// token, up to its runner's end, and its runner saw its own hostname and
// credential. The control: the template's console shows the agent
// waited, not that it configured a network or ran a runner.
func TestTheRealAgentRestoresAsTwoVMs(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	r := newWarmRig(t)
	r.archive = realAgentTemplate(t, r.kernel)

	state, tpl := r.agentTemplate(ctx)
	if c := readConsole(tpl.ConsoleLog); strings.Contains(c, "network ") || strings.Contains(c, "stubrunner") {
		t.Fatalf("the template went past its wait:\n%s", c)
	}

	vms := []*stubVM{
		{name: "x", hostIP: "169.254.201.1", guestIP: "169.254.201.2", mac: "02:00:00:00:03:0a"},
		{name: "y", hostIP: "169.254.201.5", guestIP: "169.254.201.6", mac: "02:00:00:00:03:0b"},
	}
	for _, v := range vms {
		r.restoreStub(ctx, v, state, nil)
	}
	for _, v := range vms {
		c := v.waitEnd(t)
		// Reports are sent at least once (a retry after a slow answer
		// under load repeats one) and the last may be given up when the
		// VM powers off: each event once, in order, up to runner-ready.
		want := []agentproto.Event{agentproto.EventBooted, agentproto.EventNetworkUp, agentproto.EventRunnerStarted,
			agentproto.EventRunnerReady, agentproto.EventRunnerExited}
		got := slices.Compact(v.rep.events())
		if len(got) < 4 || len(got) > len(want) || !slices.Equal(got, want[:len(got)]) {
			t.Errorf("%s reported %v, want %v; console:\n%s", v.name, v.rep.events(), want, c)
		}
		if from := v.rep.sources(); len(from) != 1 || from[0] != v.guestIP {
			t.Errorf("%s reported from %v, not its own address %s", v.name, from, v.guestIP)
		}
		if n := v.rep.neighbour(); !strings.Contains(n, v.mac) {
			t.Errorf("%s's neighbour entry as it reported %q, want its MAC %s (the template's is %s)", v.name, n, v.mac, tpl.MAC)
		}
		if !strings.Contains(c, fmt.Sprintf("stubrunner: host=runner-%s uid=1001 credential=%q", v.name, v.cred)) {
			t.Errorf("%s's runner did not see its own hostname and credential; console:\n%s", v.name, c)
		}
	}
}

// agentTemplate boots the real agent's template (r.archive) until it
// waits for its identity, saves it, and returns the state file and the
// template's spec.
func (r *warmRig) agentTemplate(ctx context.Context) (string, vmm.Spec) {
	t := r.t
	t.Helper()
	tpl := r.spec("t")
	tpl.MemoryFile = filepath.Join(t.TempDir(), "memory") // as the pool builds templates; r.restore maps it
	r.memory = tpl.MemoryFile
	m, err := r.d.Start(ctx, tpl)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Kill(context.Background())
	waitConsole(t, m, tpl.ConsoleLog, "template: waiting for identity on "+agentproto.IdentityPort, bootWait)
	state := filepath.Join(t.TempDir(), "state")
	step, stop := context.WithTimeout(ctx, 2*stepWait)
	defer stop()
	if err := m.(vmm.Warm).SaveState(step, state); err != nil {
		t.Fatal(err)
	}
	return state, tpl
}

// stubVM is a VM of the stub runner restored from a real agent's
// template: its name, its TAP's host and guest addresses, its MAC, and,
// once restored, its token, credential, machine, spec and report sink.
type stubVM struct {
	name, hostIP, guestIP, mac, token, cred string
	m                                       vmm.Machine
	spec                                    vmm.Spec
	rep                                     *reportSink
}

// waitEnd waits (at most two steps) for v's runner to end and its VM
// with it, and returns its console.
func (v *stubVM) waitEnd(t testing.TB) string {
	t.Helper()
	select {
	case <-v.m.Done():
	case <-time.After(2 * stepWait):
		t.Fatalf("%s did not run its runner to its end; reports %v; console:\n%s", v.name, v.rep.events(), readConsole(v.spec.ConsoleLog))
	}
	return readConsole(v.spec.ConsoleLog)
}

// restoreStub restores v from state and hands it its identity: its own
// address, MAC, report token and runner credential, and root when given.
func (r *warmRig) restoreStub(ctx context.Context, v *stubVM, state string, root *agentproto.Root) {
	t := r.t
	t.Helper()
	v.token, v.cred = randHex(16), "credential-of-"+v.name+"-"+randHex(16)
	v.m, v.spec = r.restore(ctx, v.name, state)
	addr(t, v.spec.TAP, v.hostIP+"/30")
	v.rep = newReportSink(t, v.hostIP, v.token)
	cfg := stubVMConfig(v.name, v.hostIP, v.guestIP, v.rep.url, v.token, []byte(v.cred))
	cfg.Root = root
	id := agentproto.Identity{Config: cfg, MAC: v.mac, Seed: make([]byte, 64), Now: time.Now()}
	rand.Read(id.Seed)
	b, _ := json.Marshal(id)
	step, stop := context.WithTimeout(ctx, stepWait)
	err := v.m.(vmm.Warm).SendIdentity(step, b)
	stop()
	if err != nil {
		t.Fatalf("identity of %s: %v; console:\n%s", v.name, err, readConsole(v.spec.ConsoleLog))
	}
}

// realAgentTemplate writes a template's initramfs of the real agent: the
// stub runner at /bin/stubrunner, the modules a restore needs (network,
// identity port), and a template's config (no VM's identity in it).
func realAgentTemplate(t testing.TB, kernel string) string {
	t.Helper()
	pool, mods := realAgentPool(t, kernel)
	out := filepath.Join(t.TempDir(), "template.cpio")
	if err := initramfs.WriteVM(out, pool, agentproto.Config{Template: true, Modules: mods}); err != nil {
		t.Fatal(err)
	}
	return out
}

// realAgentPool writes the pool archive of the real agent with the stub
// runner at /bin/stubrunner and the modules a VM needs (network, identity
// port, and extra ones); it returns the archive and the modules' guest
// paths.
func realAgentPool(t testing.TB, kernel string, extra ...string) (string, []string) {
	t.Helper()
	dir := t.TempDir()
	agentBin := buildGuest(t, "../../cmd/fireactions-agent")
	runner := buildGuest(t, "./testdata/stubrunner")
	rootArchive := filepath.Join(dir, "root.cpio")
	f, err := os.Create(rootArchive)
	if err != nil {
		t.Fatal(err)
	}
	w := initramfs.NewWriter(f)
	w.MkdirAll("/bin", 0o755, 0, 0)
	if err := w.CopyFile("/bin/stubrunner", 0o755, 0, 0, runner); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	mods, err := initramfs.ResolveModules("/lib/modules/"+strings.TrimPrefix(filepath.Base(kernel), "vmlinuz-"),
		append([]string{"virtio_mmio", "virtio_net", "virtio_console"}, extra...))
	if err != nil {
		t.Fatal(err)
	}
	pool := filepath.Join(dir, "pool.cpio")
	if err := (initramfs.Boot{RootArchive: rootArchive, Agent: agentBin, Modules: mods}).WritePool(pool); err != nil {
		t.Fatal(err)
	}
	return pool, initramfs.GuestPaths(mods)
}

// stubVMConfig is the config of a VM whose runner is the stub, with the
// host's end at hostIP and its own address guestIP (a /30).
func stubVMConfig(name, hostIP, guestIP, reportURL, token string, cred []byte) agentproto.Config {
	return agentproto.Config{
		VMID: "vm-" + name, Hostname: "runner-" + name,
		Network: agentproto.Network{Interface: "eth0", Address: guestIP + "/30", Gateway: hostIP},
		Report:  agentproto.Reporter{URL: reportURL, Token: token},
		Runner: agentproto.Runner{
			Forge: "gitea", User: "runner", UID: 1001, GID: 1001,
			Command:   []string{"/bin/stubrunner"},
			ReadyLine: "listening for jobs",
			Files:     []agentproto.File{{Path: "/home/runner/.runner", Mode: 0o600, Content: cred}},
		},
	}
}

// addr gives the host end of a TAP its address and sets it up.
func addr(t testing.TB, dev, cidr string) {
	t.Helper()
	for _, args := range [][]string{{"addr", "add", cidr, "dev", dev}, {"link", "set", dev, "up"}} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return fmt.Sprintf("%x", b)
}

// reportSink is one VM's report listener on its TAP's host address: it
// takes reports with the VM's token only, and records each event, the
// address it came from and that address's MAC.
type reportSink struct {
	url   string
	token string

	mu    sync.Mutex
	evs   []agentproto.Event
	from  map[string]bool
	neigh string // the host's neighbour entry of the first report's sender
}

func newReportSink(t testing.TB, ip, token string) *reportSink {
	t.Helper()
	l, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	s := &reportSink{url: "http://" + l.Addr().String() + agentproto.ReportPath, token: token, from: map[string]bool{}}
	srv := &http.Server{Handler: s, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return s
}

func (s *reportSink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != agentproto.ReportPath || r.Header.Get("Authorization") != "Bearer "+s.token {
		http.Error(w, "no", http.StatusUnauthorized)
		return
	}
	var rep agentproto.Report
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&rep); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	host, _, _ := net.SplitHostPort(r.RemoteAddr)
	s.mu.Lock()
	if s.neigh == "" {
		// The guest's MAC, as the host learnt it while the VM runs
		// (its TAP's entries go when QEMU closes it).
		out, _ := exec.Command("ip", "neigh", "show", host).CombinedOutput()
		s.neigh = string(out)
	}
	s.evs = append(s.evs, rep.Event)
	s.from[host] = true
	s.mu.Unlock()
}

func (s *reportSink) events() []agentproto.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]agentproto.Event(nil), s.evs...)
}

func (s *reportSink) neighbour() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.neigh
}

func (s *reportSink) sources() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for h := range s.from {
		out = append(out, h)
	}
	return out
}
