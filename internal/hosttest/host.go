package hosttest

import (
	"encoding/json"
	"net/netip"
	"os"
	"sync"
	"syscall"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
)

// Boot stands in for the pool manager's boot files: it records each VM's
// agent config instead of writing an initramfs.
type Boot struct {
	// The lock is held while a config is written: hold it to read Configs
	// while the manager runs.
	sync.Mutex
	// Configs are the configs written, by VM id.
	Configs map[string]agentproto.Config
	// Full, when set, says the state directory has no room left: writes
	// fail as a full file system fails them.
	Full func(dst string) bool
	// Files, when set, writes each VM's config to its initramfs file, as
	// the VM's own cpio holds it (the runner's credential with it).
	Files bool
}

// NewBoot is a Boot with no config written yet.
func NewBoot() *Boot { return &Boot{Configs: map[string]agentproto.Config{}} }

func (b *Boot) WriteVM(_, dst string, cfg agentproto.Config) error {
	if b.Full != nil && b.Full(dst) {
		return &os.PathError{Op: "write", Path: dst, Err: syscall.ENOSPC}
	}
	b.Lock()
	defer b.Unlock()
	if b.Configs == nil {
		b.Configs = map[string]agentproto.Config{}
	}
	b.Configs[cfg.VMID] = cfg
	if b.Files {
		j, err := json.Marshal(cfg)
		if err != nil {
			return err
		}
		for _, f := range cfg.Runner.Files { // as the cpio holds them
			j = append(append(j, '\n'), f.Content...)
		}
		return os.WriteFile(dst, j, 0o600)
	}
	return nil
}

// Config is the config written for the VM id.
func (b *Boot) Config(id string) agentproto.Config {
	b.Lock()
	defer b.Unlock()
	return b.Configs[id]
}

// Net stands in for the pool manager's network: it tracks TAPs and the
// addresses admitted on them.
type Net struct {
	// The lock is held while TAPs and Admitted change: hold it to read them
	// while the manager runs.
	sync.Mutex
	// TAPs are the TAPs that exist.
	TAPs map[string]bool
	// Admitted is, by TAP, the "mac|ip" its rules admit.
	Admitted map[string]string
}

// NewNet is a Net with no TAP.
func NewNet() *Net { return &Net{TAPs: map[string]bool{}} }

func (n *Net) AddTAP(name string) error {
	n.Lock()
	defer n.Unlock()
	if n.TAPs == nil {
		n.TAPs = map[string]bool{}
	}
	n.TAPs[name] = true
	return nil
}

func (n *Net) DeleteTAP(name string) error {
	n.Lock()
	defer n.Unlock()
	delete(n.TAPs, name)
	return nil
}

func (n *Net) Admit(tap, mac string, ip netip.Addr) error {
	n.Lock()
	defer n.Unlock()
	if n.Admitted == nil {
		n.Admitted = map[string]string{}
	}
	n.Admitted[tap] = mac + "|" + ip.String()
	return nil
}

func (n *Net) Expel(tap, _ string, _ netip.Addr) error {
	n.Lock()
	defer n.Unlock()
	delete(n.Admitted, tap)
	return nil
}

// Count is how many TAPs exist.
func (n *Net) Count() int {
	n.Lock()
	defer n.Unlock()
	return len(n.TAPs)
}
