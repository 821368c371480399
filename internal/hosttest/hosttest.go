// Package hosttest holds the test helpers more than one package's tests
// need: a check that a test runs as root, a buffer safe to read while
// another goroutine writes to it, an in-memory OCI registry with the
// helpers that fill it, and in-memory stand-ins for the host pieces the
// pool manager drives (boot files, network).
//
// It is test code: no product package imports it (internal/deptest holds
// the module to that), and it imports no package of the module but
// agentproto, so the internal tests of any other package may import it
// without a cycle. Stand-ins for external systems (GitHub, GitLab,
// Firecracker) are not here but in internal/double.
package hosttest

import (
	"bytes"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// RequireRoot fails the test unless it runs as root; why says what needs
// root.
func RequireRoot(t testing.TB, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatalf("needs root: %s (make test runs as root)", why)
	}
}

// SyncBuffer is a bytes.Buffer safe to read (String) while another
// goroutine writes to it: a log sink or console a test watches.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Len()
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// CloudKernelModules is the module tree (/lib/modules/<release>) of the
// Debian cloud kernel the e2e guests boot; make deps installs it, so its
// absence fails the test rather than skipping it.
func CloudKernelModules(t testing.TB) string {
	t.Helper()
	dirs, _ := filepath.Glob("/lib/modules/*-cloud-amd64")
	if len(dirs) == 0 {
		t.Fatal("no Debian cloud kernel modules in /lib/modules (make deps installs linux-image-cloud-amd64)")
	}
	return dirs[0]
}
