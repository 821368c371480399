package metrics

import (
	"fmt"
	"io"
	"math"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
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

// The ring keeps the last outcomes, newest first, and drops the oldest
// past its size.
func TestRecentOutcomesKeepTheNewestFirst(t *testing.T) {
	m := New(t.TempDir())
	m.JobDone("a", time.Second)
	m.VMFailed("b", "boot_timeout")
	got := m.RecentOutcomes()
	if len(got) != 2 || got[0].Pool != "b" || got[0].Reason != "boot_timeout" || got[1].Pool != "a" || got[1].Reason != "" {
		t.Fatalf("outcomes = %+v, want b's failure then a's job", got)
	}
	for i := range recentOutcomes + 7 {
		m.VMFailed(fmt.Sprint("p", i), "crashed")
	}
	got = m.RecentOutcomes()
	if len(got) != recentOutcomes {
		t.Fatalf("kept %d outcomes, want %d", len(got), recentOutcomes)
	}
	if got[0].Pool != fmt.Sprint("p", recentOutcomes+6) || got[len(got)-1].Pool != "p7" {
		t.Errorf("newest %q, oldest %q; want p%d and p7", got[0].Pool, got[len(got)-1].Pool, recentOutcomes+6)
	}
}

// The distributions sum every pool's histogram into non-cumulative bars
// whose counts add up to the observations.
func TestDistributionsSumThePools(t *testing.T) {
	m := New(t.TempDir())
	m.Booted("a", 50*time.Millisecond) // first bucket (<= 0.1 s)
	m.Booted("b", 2*time.Second)       // (1.5625, 3.90625]
	m.Booted("b", 3*time.Second)
	m.Booted("a", 1000*time.Hour) // +Inf
	m.QueueWait("a", time.Second)
	ds := m.Distributions()
	if len(ds) != 2 || ds[0].Metric != "fireactions_vm_boot_seconds" || ds[1].Metric != "fireactions_job_queue_wait_seconds" {
		t.Fatalf("distributions = %+v", ds)
	}
	boot := ds[0]
	if boot.Count != 4 {
		t.Errorf("boot count %d, want 4", boot.Count)
	}
	var total uint64
	bars := map[float64]uint64{}
	for _, b := range boot.Buckets {
		total += b.Count
		bars[b.UpperBound] = b.Count
	}
	if total != 4 {
		t.Errorf("bars add up to %d, want 4", total)
	}
	if bars[0.1] != 1 || bars[3.90625] != 2 || bars[math.Inf(1)] != 1 {
		t.Errorf("bars = %v, want 1 at 0.1, 2 at 3.90625, 1 at +Inf", bars)
	}
	if ds[1].Count != 1 {
		t.Errorf("queue wait count %d, want 1", ds[1].Count)
	}
}

// scrape is what m serves on /metrics.
func scrape(m *Metrics) string {
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	return string(body)
}
