package pool

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/config"
	"github.com/nixos-fireactions/nixos-fireactions/forge"
	"github.com/nixos-fireactions/nixos-fireactions/internal/hosttest"
	"github.com/nixos-fireactions/nixos-fireactions/netplan"
	"github.com/nixos-fireactions/nixos-fireactions/vmm"
	"github.com/nixos-fireactions/nixos-fireactions/vmstate"
)

// floodingHV starts guests that fill their console log far past any cap
// (as a guest with root writing to its serial port would, had the log no
// cap of its own) and then fail, so the manager keeps their console.
type floodingHV struct{ size int }

func (floodingHV) Name() string { return "flooding" }

func (h floodingHV) Start(_ context.Context, spec vmm.Spec) (vmm.Machine, error) {
	f, err := os.OpenFile(spec.ConsoleLog, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	_, err = f.Write(bytes.Repeat([]byte("x"), h.size))
	if err == nil {
		_, err = f.WriteString("the last line the guest wrote\n")
	}
	f.Close()
	if err != nil {
		return nil, err
	}
	m := &fakeMachine{done: make(chan struct{}), kill: make(chan struct{}), err: errors.New("monitor crashed")}
	close(m.done)
	return m, nil
}

// TestKeptConsoleOfAFailedVMIsCapped: the copy kept of a failed VM's
// console is within the console cap (1 MiB by default) whatever the
// VM's own log holds, and ends with the last bytes the guest wrote.
func TestKeptConsoleOfAFailedVMIsCapped(t *testing.T) {
	pc := config.PoolDefaults()
	pc.Name, pc.Forge, pc.Labels, pc.MinIdle, pc.Max = "p", "f", []string{"linux"}, 1, 1
	cfg := config.Defaults()
	cfg.HostID = "test"
	cfg.Network.Gateway = "10.200.0.1"
	cfg.Pools = []config.Pool{pc}
	root := t.TempDir()
	store, err := vmstate.Open(filepath.Join(root, "vms"))
	if err != nil {
		t.Fatal(err)
	}
	logs := filepath.Join(root, "logs")
	m, err := New(Deps{
		Config: &cfg, Forges: map[string]forge.Forge{"p": newFakeForge()}, Network: hosttest.NewNet(),
		Alloc: netplan.NewAllocator(netip.MustParsePrefix("10.200.0.0/24"), netip.MustParseAddr("10.200.0.1")),
		Store: store, Boot: hosttest.NewBoot(), Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		ReportURL: "http://10.200.0.1:8089/agent/v1/report", Interval: 10 * time.Millisecond,
		Hypervisor: floodingHV{size: 8 << 20}, ConsoleDir: logs,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { m.Run(ctx); close(done) }()
	defer func() {
		cancel()
		<-done
		dctx, dcancel := context.WithTimeout(context.Background(), time.Second)
		defer dcancel()
		_ = m.Drain(dctx)
	}()
	var kept []string
	eventually(t, 5*time.Second, "a failed VM's console kept", func() bool {
		kept, _ = filepath.Glob(filepath.Join(logs, "*.log"))
		return len(kept) > 0
	})
	// The copy is written once the VM is torn down; let it finish.
	var b []byte
	want := []byte("the last line the guest wrote\n")
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if b, _ = os.ReadFile(kept[0]); bytes.HasSuffix(b, want) || len(b) > 1<<20 {
			break
		}
	}
	if len(b) > 1<<20 {
		t.Errorf("kept console log %s is %d bytes, want at most %d", filepath.Base(kept[0]), len(b), 1<<20)
	}
	if !bytes.HasSuffix(b, want) {
		t.Errorf("kept console log does not end with the last bytes written")
	}
}
