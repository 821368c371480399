package doctor

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSystemHost runs the real Host's checks on this machine.
func TestSystemHost(t *testing.T) {
	var h System
	dir := t.TempDir()
	if err := h.Writable(filepath.Join(dir, "not", "yet")); err != nil {
		t.Errorf("a missing directory under a writable one: %v", err)
	}
	os.Chmod(dir, 0o500)
	defer os.Chmod(dir, 0o700)
	if os.Geteuid() != 0 {
		if err := h.Writable(dir); err == nil {
			t.Error("a read-only directory is writable")
		}
	}
	if free, err := h.Free(filepath.Join(dir, "missing")); err != nil || free == 0 {
		t.Errorf("Free = %d, %v", free, err)
	}
	if same, err := h.SameFS(dir, filepath.Join(dir, "missing")); err != nil || !same {
		t.Errorf("SameFS = %v, %v", same, err)
	}
	if mem, err := h.MemAvailable(); err != nil || mem == 0 {
		t.Errorf("MemAvailable = %d, %v", mem, err)
	}
	exe, _ := os.Executable()
	if head, err := h.Head(exe, 0x210); err != nil || kernelFormat(head) != formatELF {
		t.Errorf("the test binary's head: %v, %q", err, kernelFormat(head))
	}
	if v, err := h.Version(context.Background(), "/bin/true"); err != nil || !strings.Contains(v, "true") {
		t.Errorf("Version(/bin/true) = %q, %v", v, err)
	}
	if _, err := h.Version(context.Background(), "/bin/false"); err == nil {
		t.Error("a failing --version is no error")
	}
	if links, err := h.Links(); err != nil || links["lo"] == "" {
		t.Errorf("Links = %v, %v", links, err)
	}
}
