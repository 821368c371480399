package kvmprobe

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestProbeMissingDevice(t *testing.T) {
	r := Probe(context.Background(), filepath.Join(t.TempDir(), "kvm"))
	if r.Usable || !strings.Contains(r.Reason, "open") {
		t.Fatalf("probe of a missing device = %v, want unusable with an open error", r)
	}
}

func TestProbeNotADevice(t *testing.T) {
	r := Probe(context.Background(), "/dev/null")
	if r.Usable {
		t.Fatalf("probe of /dev/null = %v, want unusable", r)
	}
}

// TestProbeThisHost runs the real probe; it must finish within its
// deadline whatever the host's KVM does, and say why when unusable.
func TestProbeThisHost(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	start := time.Now()
	r := Probe(ctx, "/dev/kvm")
	if time.Since(start) > 4*time.Second {
		t.Fatalf("probe took %s", time.Since(start))
	}
	if !r.Usable && r.Reason == "" {
		t.Fatal("unusable without a reason")
	}
	t.Logf("/dev/kvm: %v", r)
}
