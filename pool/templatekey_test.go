package pool

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/nixos-fireactions/nixos-fireactions/config"
)

// accelHV is a hypervisor that adds to the guest kernel's command line,
// as QEMU under TCG adds the guest's TSC rate.
type accelHV struct {
	*fakeHV
	cmdline string
}

func (a accelHV) AccelCmdline() string { return a.cmdline }

func TestATemplateIsKeyedByWhatTheHypervisorAddsToItsKernelsCommandLine(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{"kernel": "k", "initrd": "i", "agent": "a"}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	pc := config.Pool{Name: "p", VM: config.VMShape{Kernel: filepath.Join(dir, "kernel"), VCPUs: 1, MemoryMiB: 256}}
	key := func(cmdline string) string {
		t.Helper()
		m := &Manager{d: Deps{Hypervisor: accelHV{&fakeHV{}, cmdline}, Agent: filepath.Join(dir, "agent")}}
		k, err := m.templateKey(context.Background(), pc, filepath.Join(dir, "initrd"), "")
		if err != nil {
			t.Fatal(err)
		}
		return k.Image
	}
	old, measured := key("tsc_early_khz=2600000 lpj=10400000"), key("tsc_early_khz=2096000 lpj=8384000")
	if old == measured {
		t.Error("a template booted with another TSC rate keeps its key: its restores keep that clock's rate")
	}
	if again := key("tsc_early_khz=2096000 lpj=8384000"); again != measured {
		t.Error("the same command line gives another key")
	}
}
