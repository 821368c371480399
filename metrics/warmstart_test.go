package metrics

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/nixos-fireactions/nixos-fireactions/warmstart"
)

// A warm-start pool's VM that boots cold for want of a template is
// counted by pool and reason, and served on /metrics.
func TestWarmStartFallbacksAreCountedByReason(t *testing.T) {
	m := New(t.TempDir())
	var log bytes.Buffer
	c := &warmstart.Chooser{Pool: "p", Log: slog.New(slog.NewTextHandler(&log, nil)), Metrics: m.WarmStarts()}
	if c.Template(context.Background(), "vm1", t.TempDir(), warmstart.Key{VMM: "qemu 7.2.22"}) != nil {
		t.Fatal("an empty directory gave a template")
	}
	if want := `fireactions_warm_start_fallbacks_total{pool="p",reason="no_template"} 1`; !strings.Contains(scrape(m), want) {
		t.Errorf("/metrics lacks %q", want)
	}
	if !strings.Contains(log.String(), "reason=no_template") {
		t.Errorf("no log line says why: %q", log.String())
	}
}

// Template builds are counted by pool and result.
func TestWarmTemplateBuildsAreCountedByResult(t *testing.T) {
	m := New(t.TempDir())
	w := m.WarmStarts()
	w.WarmTemplateBuilt("p", false)
	w.WarmTemplateBuilt("p", true)
	w.WarmTemplateBuilt("p", false)
	out := scrape(m)
	for _, want := range []string{
		`fireactions_warm_start_template_builds_total{pool="p",result="failed"} 2`,
		`fireactions_warm_start_template_builds_total{pool="p",result="ok"} 1`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}
