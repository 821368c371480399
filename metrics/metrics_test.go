package metrics

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"
)

// A record that could not be saved is counted per pool, and served on
// /metrics under its documented name.
func TestUnsavedRecordsAreCountedPerPool(t *testing.T) {
	m := New(t.TempDir())
	m.RecordUnsaved("a")
	m.RecordUnsaved("a")
	m.RecordUnsaved("b")
	body := scrape(m)
	for _, want := range []string{
		"# TYPE fireactions_vm_record_save_failures_total counter",
		`fireactions_vm_record_save_failures_total{pool="a"} 2`,
		`fireactions_vm_record_save_failures_total{pool="b"} 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

// scrape is what m serves on /metrics.
func scrape(m *Metrics) string {
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	return string(body)
}
