package pool_test

// The processes of the crash loop (see crashloop_test.go) other than the
// test itself: the orchestrator child, which runs the real pool manager
// with durable state until the test SIGKILLs it, and the VM processes it
// starts, whose "guest" reports to the orchestrator's agent listener and
// takes its job at the forge the test serves, as a real guest agent and
// runner do. Both are this test binary, re-executed with CRASHLOOP_ROLE
// set; everything they share with the test goes through the state
// directory, the process table and the forge's HTTP API.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
	"github.com/nixos-fireactions/nixos-fireactions/config"
	"github.com/nixos-fireactions/nixos-fireactions/forge"
	"github.com/nixos-fireactions/nixos-fireactions/netplan"
	"github.com/nixos-fireactions/nixos-fireactions/pool"
	"github.com/nixos-fireactions/nixos-fireactions/vmm"
	"github.com/nixos-fireactions/nixos-fireactions/vmm/process"
	"github.com/nixos-fireactions/nixos-fireactions/vmstate"
)

// Environment of the re-executed test binary.
const (
	envRole  = "CRASHLOOP_ROLE" // "orchestrator" or "vm"
	envDir   = "CRASHLOOP_DIR"  // the test's directory (state, socket, files)
	envForge = "CRASHLOOP_FORGE"
	envRun   = "CRASHLOOP_RUN"   // the orchestrator run's number
	envFinal = "CRASHLOOP_FINAL" // "1": recover, then drain and exit
	envCfg   = "CRASHLOOP_CFG"   // a VM's agent config, as its initramfs held it
	// vmArg marks a VM process's command line, followed by the test's
	// directory and the VM id: the identity recovery finds it by.
	vmArg      = "crashloop-vm"
	crashHost  = "crash"
	crashPool  = "p"
	reportHost = "http://agent"
)

// crashView is what an orchestrator run says it holds once Recover has
// returned, before it does anything else.
type crashView struct {
	VMs        []vmstate.Record `json:"vms"`
	Pending    []string         `json:"pending"`
	RecoverErr string           `json:"recover_err,omitempty"`
}

func stateDirOf(dir string) string    { return filepath.Join(dir, "vms") }
func sockOf(dir string) string        { return filepath.Join(dir, "agent.sock") }
func viewOf(dir string, n int) string { return filepath.Join(dir, fmt.Sprintf("view-%d.json", n)) }
func goOf(dir string, n int) string   { return filepath.Join(dir, fmt.Sprintf("go-%d", n)) }
func drainedOf(dir string, n int) string {
	return filepath.Join(dir, fmt.Sprintf("drained-%d", n))
}
func drainOf(dir string, n int) string { return filepath.Join(dir, fmt.Sprintf("drain-%d", n)) }
func violationsOf(dir string) string   { return filepath.Join(dir, "violations") }

// crashChildMain runs the role the environment names and exits; it
// returns only in the test's own process.
func crashChildMain() {
	switch os.Getenv(envRole) {
	case "orchestrator":
		if err := runCrashOrchestrator(); err != nil {
			fmt.Fprintln(os.Stderr, "orchestrator:", err)
			os.Exit(1)
		}
		os.Exit(0)
	case "vm":
		os.Exit(runCrashGuest())
	}
}

func runCrashOrchestrator() error {
	dir := os.Getenv(envDir)
	run, err := strconv.Atoi(os.Getenv(envRun))
	if err != nil {
		return fmt.Errorf("run number: %w", err)
	}
	final := os.Getenv(envFinal) == "1"
	// Never outlive the test: a test process killed (a timeout) leaves
	// no orchestrator starting VMs.
	go func(parent int) {
		for os.Getppid() == parent {
			time.Sleep(100 * time.Millisecond)
		}
		os.Exit(4)
	}(os.Getppid())
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	store, err := vmstate.Open(stateDirOf(dir))
	if err != nil {
		return err
	}
	pc := config.PoolDefaults()
	pc.Name, pc.Forge, pc.Labels, pc.MinIdle, pc.Max = crashPool, "f", []string{"linux"}, 2, 6
	pc.Timeouts.Boot = time.Minute // adopted booting VMs are not timed out meanwhile
	pc.Timeouts.Idle = 300 * time.Millisecond
	cfg := config.Defaults()
	cfg.HostID = crashHost
	cfg.Network.CIDR = "10.200.0.0/24"
	cfg.Network.Gateway = "10.200.0.1"
	cfg.Pools = []config.Pool{pc}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("own executable: %w", err)
	}
	hv := &procHV{self: self, dir: dir}
	alloc := netplan.NewAllocator(netip.MustParsePrefix(cfg.Network.CIDR), netip.MustParseAddr(cfg.Network.Gateway))
	m, err := pool.New(pool.Deps{
		Config: &cfg, Forges: map[string]forge.Forge{crashPool: &httpForge{base: os.Getenv(envForge), hc: &http.Client{Timeout: 10 * time.Second}}},
		Hypervisor: hv, Network: nopNet{}, Alloc: alloc, Store: store, Boot: jsonBoot{}, Log: log,
		ReportURL: reportHost + agentproto.ReportPath, Interval: 50 * time.Millisecond,
	})
	if err != nil {
		return err
	}
	// The agent listener first, as serve does: guests of adopted VMs
	// report to it.
	_ = os.Remove(sockOf(dir))
	ln, err := net.Listen("unix", sockOf(dir))
	if err != nil {
		return fmt.Errorf("agent listener: %w", err)
	}
	go func() { _ = http.Serve(ln, m.AgentHandler()) }()

	ctx := context.Background()
	rerr := m.Recover(ctx, pool.Leftovers{KillVM: hv.kill, Adopt: hv.Adopt})
	v := crashView{VMs: m.VMs(), Pending: m.PendingRemovals()}
	if rerr != nil {
		v.RecoverErr = rerr.Error()
	}
	if err := writeFileAtomic(viewOf(dir, run), v); err != nil {
		return err
	}
	// The test checks what Recover left, then lets the run go on.
	for end := time.Now().Add(5 * time.Minute); ; time.Sleep(5 * time.Millisecond) {
		if _, err := os.Stat(goOf(dir, run)); err == nil {
			break
		}
		if time.Now().After(end) {
			return errors.New("the test never let this run go on")
		}
	}
	go watchAddresses(m, violationsOf(dir))
	if final {
		dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := m.Drain(dctx); err != nil {
			return fmt.Errorf("drain: %w", err)
		}
		return os.WriteFile(drainedOf(dir, run), nil, 0o600)
	}
	// Until the test kills this process, or asks for a drain (SIGTERM's
	// path) to kill it in.
	rctx, stop := context.WithCancel(ctx)
	ran := make(chan struct{})
	go func() { m.Run(rctx); close(ran) }()
	for {
		if _, err := os.Stat(drainOf(dir, run)); err == nil {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	stop()
	<-ran
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_ = m.Drain(dctx)
	select {} // the test kills it
}

// watchAddresses records, in the violations file, any moment at which
// two live VMs hold one address.
func watchAddresses(m *pool.Manager, path string) {
	for {
		held := map[string]string{}
		for _, r := range m.VMs() {
			if r.Address == "" || r.Phase.Terminal() {
				continue
			}
			if other, ok := held[r.Address]; ok {
				appendLine(path, fmt.Sprintf("address %s held by vm %s and vm %s at once", r.Address, other, r.ID))
			}
			held[r.Address] = r.ID
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func appendLine(path, line string) {
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return
	}
	defer f.Close()
	_, _ = f.WriteString(line + "\n")
}

func writeFileAtomic(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s: %w", path, err)
	}
	if err := os.WriteFile(path+".tmp", b, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// nopNet is a host network without devices: TAPs and rules are not what
// this test looks at.
type nopNet struct{}

func (nopNet) AddTAP(string) error                    { return nil }
func (nopNet) DeleteTAP(string) error                 { return nil }
func (nopNet) Admit(string, string, netip.Addr) error { return nil }
func (nopNet) Expel(string, string, netip.Addr) error { return nil }

// jsonBoot writes a VM's agent config as its initramfs: the VM process
// gets it from there, as a guest does.
type jsonBoot struct{}

func (jsonBoot) WriteVM(_, dst string, cfg agentproto.Config) error {
	b, err := json.Marshal(cfg)
	if err != nil {
		return fmt.Errorf("encode agent config: %w", err)
	}
	if err := os.WriteFile(dst, b, 0o600); err != nil {
		return fmt.Errorf("write initramfs: %w", err)
	}
	return nil
}

// procHV runs each VM as a process of its own (this binary as a guest),
// which outlives the orchestrator and is found again by its command line.
type procHV struct {
	self, dir string
}

var (
	_ vmm.Finder  = (*procHV)(nil)
	_ vmm.Adopter = (*procHV)(nil)
)

func (h *procHV) Name() string { return "crashloop" }

func (h *procHV) Start(_ context.Context, spec vmm.Spec) (vmm.Machine, error) {
	cfg, err := os.ReadFile(spec.Initramfs)
	if err != nil {
		return nil, fmt.Errorf("vm %s: read initramfs: %w", spec.ID, err)
	}
	cmd := exec.Command(h.self, "-test.run=^TestCrashLoop$", "--", vmArg, h.dir, spec.ID)
	var env []string
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "CRASHLOOP_") {
			env = append(env, e)
		}
	}
	cmd.Env = append(env, envRole+"=vm", envDir+"="+h.dir, envForge+"="+os.Getenv(envForge), envCfg+"="+string(cfg))
	// Its own process group: nothing aimed at the orchestrator reaches it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("vm %s: start: %w", spec.ID, err)
	}
	pm := &procMachine{pid: cmd.Process.Pid, proc: cmd.Process, done: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		pm.mu.Lock()
		if pm.killed {
			pm.err = vmm.ErrKilled
		} else if err != nil {
			pm.err = fmt.Errorf("vm %s: monitor: %w", spec.ID, err)
		}
		pm.mu.Unlock()
		close(pm.done)
	}()
	return pm, nil
}

func (h *procHV) FindMonitor(id string) (int, error) {
	return findGuest(h.dir, id)
}

func (h *procHV) Adopt(id string, pid int) (vmm.Machine, error) {
	m, err := h.identity().Adopt(id, pid, nil)
	if err != nil {
		return nil, fmt.Errorf("adopt vm %s: %w", id, err)
	}
	return m, nil
}

// identity tells the test's VM processes by their command line's tail.
func (h *procHV) identity() process.Identity {
	return func(args []string, id string) bool {
		return strings.HasSuffix(strings.Join(args, "\x00")+"\x00", guestArgs(h.dir, id))
	}
}

// kill is Leftovers.KillVM: it ends pid if it is still VM id's process.
func (h *procHV) kill(ctx context.Context, id string, pid int) error {
	if !isGuest(pid, h.dir, id) {
		return nil
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("kill vm %s (pid %d): %w", id, pid, err)
	}
	for isGuest(pid, h.dir, id) {
		select {
		case <-ctx.Done():
			return fmt.Errorf("kill vm %s (pid %d): %w", id, pid, ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
	return nil
}

type procMachine struct {
	pid  int
	proc *os.Process
	done chan struct{}

	mu     sync.Mutex
	killed bool
	err    error
}

func (m *procMachine) PID() int              { return m.pid }
func (m *procMachine) Done() <-chan struct{} { return m.done }
func (m *procMachine) Err() error {
	<-m.done
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.err
}

func (m *procMachine) Kill(ctx context.Context) error {
	m.mu.Lock()
	select {
	case <-m.done:
	default:
		m.killed = true
		_ = m.proc.Signal(syscall.SIGKILL)
	}
	m.mu.Unlock()
	select {
	case <-m.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("kill vm process %d: %w", m.pid, ctx.Err())
	}
}

// guestArgs is how a VM process's command line ends.
func guestArgs(dir, id string) string { return vmArg + "\x00" + dir + "\x00" + id + "\x00" }

// isGuest reports whether pid runs VM id of the test in dir (a zombie's
// command line is empty: it runs nothing).
func isGuest(pid int, dir, id string) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	return err == nil && bytes.HasSuffix(b, []byte(guestArgs(dir, id)))
}

// liveGuests are the VM processes of the test in dir, by VM id.
func liveGuests(dir string) (map[string][]int, error) {
	procs, err := filepath.Glob("/proc/[0-9]*")
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	out := map[string][]int{}
	marker := []byte(vmArg + "\x00" + dir + "\x00")
	for _, p := range procs {
		pid, err := strconv.Atoi(strings.TrimPrefix(p, "/proc/"))
		if err != nil {
			continue
		}
		b, err := os.ReadFile(p + "/cmdline")
		if err != nil {
			continue
		}
		i := bytes.Index(b, marker)
		if i < 0 {
			continue
		}
		id := strings.TrimSuffix(string(b[i+len(marker):]), "\x00")
		out[id] = append(out[id], pid)
	}
	return out, nil
}

func findGuest(dir, id string) (int, error) {
	live, err := liveGuests(dir)
	if err != nil {
		return 0, err
	}
	switch pids := live[id]; len(pids) {
	case 0:
		return 0, nil
	case 1:
		return pids[0], nil
	default:
		return 0, fmt.Errorf("vm %s: processes %v all claim it", id, pids)
	}
}

// runCrashGuest is a VM: its agent reports booted and ready, its runner
// takes one job at the forge, runs it, and the VM powers off.
func runCrashGuest() int {
	var cfg agentproto.Config
	if err := json.Unmarshal([]byte(os.Getenv(envCfg)), &cfg); err != nil {
		fmt.Fprintln(os.Stderr, "guest config:", err)
		return 2
	}
	sock := sockOf(os.Getenv(envDir))
	agent := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		},
	}}
	fc := &http.Client{Timeout: 5 * time.Second}
	base := os.Getenv(envForge)
	name := ""
	for _, e := range cfg.Runner.Env {
		if v, ok := strings.CutPrefix(e, "RUNNER_NAME="); ok {
			name = v
		}
	}
	// Like the real agent: a report the host does not answer (it is
	// restarting) is sent again for up to a minute.
	deadline := time.Now().Add(2 * time.Minute)
	report := func(r agentproto.Report) {
		r.VMID = cfg.VMID
		body, _ := json.Marshal(r)
		for end := time.Now().Add(time.Minute); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
			req, _ := http.NewRequest(http.MethodPost, cfg.Report.URL, bytes.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+cfg.Report.Token)
			resp, err := agent.Do(req)
			if err != nil {
				continue
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode < 500 {
				return
			}
		}
	}
	report(agentproto.Report{Event: agentproto.EventBooted})
	report(agentproto.Report{Event: agentproto.EventRunnerReady})
	for time.Now().Before(deadline) {
		resp, err := fc.PostForm(base+"/take", url.Values{"name": {name}})
		if err != nil {
			time.Sleep(20 * time.Millisecond)
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			time.Sleep(20 * time.Millisecond)
			continue
		}
		job := string(b)
		report(agentproto.Report{Event: agentproto.EventJobStarted, Job: job})
		n, _ := strconv.Atoi(strings.TrimPrefix(job, "job-"))
		time.Sleep(time.Duration(50+n%8*50) * time.Millisecond) // 50–400 ms
		if resp, err := fc.PostForm(base+"/finish", url.Values{"name": {name}, "job": {job}}); err == nil {
			resp.Body.Close()
		}
		report(agentproto.Report{Event: agentproto.EventRunnerExited})
		return 0
	}
	return 3
}

// httpForge is the forge the test serves, over HTTP: its runners live in
// the test's process, where a crash of the orchestrator cannot hide them.
type httpForge struct {
	base string
	hc   *http.Client
}

func (f *httpForge) Kind() string { return "crashloop" }

func (f *httpForge) do(ctx context.Context, method, path string, form url.Values, out any) error {
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequestWithContext(ctx, method, f.base+path, body)
	if err != nil {
		return fmt.Errorf("forge %s %s: %w", method, path, err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := f.hc.Do(req)
	if err != nil {
		return fmt.Errorf("forge %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("forge %s %s: %s: %s", method, path, resp.Status, bytes.TrimSpace(b))
	}
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			return fmt.Errorf("forge %s %s: decode: %w", method, path, err)
		}
	}
	return nil
}

func (f *httpForge) QueuedJobs(ctx context.Context) ([]forge.Job, error) {
	var ids []string
	if err := f.do(ctx, http.MethodGet, "/jobs", nil, &ids); err != nil {
		return nil, err
	}
	out := make([]forge.Job, len(ids))
	for i, id := range ids {
		out[i] = forge.Job{ID: id, Labels: []string{"linux"}}
	}
	return out, nil
}

func (f *httpForge) Register(ctx context.Context, spec forge.RunnerSpec) (*forge.Runner, error) {
	var r forgeRunner
	if err := f.do(ctx, http.MethodPost, "/runners", url.Values{"name": {spec.Name}}, &r); err != nil {
		return nil, err
	}
	return &forge.Runner{RunnerRef: forge.RunnerRef{ID: r.ID, Name: r.Name}, Guest: agentproto.Runner{
		Forge: "crashloop", User: spec.Guest.User, Command: []string{"runner"}, Env: []string{"RUNNER_NAME=" + r.Name},
	}}, nil
}

func (f *httpForge) Runners(ctx context.Context, owner forge.Owner) ([]forge.RunnerState, error) {
	var rs []forgeRunner
	if err := f.do(ctx, http.MethodGet, "/runners", nil, &rs); err != nil {
		return nil, err
	}
	var out []forge.RunnerState
	for _, r := range rs {
		if owner.Owns(r.Name) {
			out = append(out, forge.RunnerState{RunnerRef: forge.RunnerRef{ID: r.ID, Name: r.Name}, Online: true, Busy: r.Busy})
		}
	}
	return out, nil
}

func (f *httpForge) Remove(ctx context.Context, r forge.RunnerRef) error {
	return f.do(ctx, http.MethodDelete, "/runners/"+url.PathEscape(r.ID), nil, nil)
}

// forgeRunner is a runner as the test's forge lists it.
type forgeRunner struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	Busy bool   `json:"busy"`
	Job  string `json:"job,omitempty"`
}
