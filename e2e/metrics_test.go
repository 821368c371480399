//go:build e2e

package e2e

import (
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// checkMetrics scrapes /metrics and checks each metric the operations
// issue names is there with sane values after `jobs` jobs of pool ran,
// of which at least minQueued were seen queued (a pool with idle VMs may
// see none: a waiting VM takes a job between two polls of the queue).
func checkMetrics(t *testing.T, c *http.Client, url, pool string, jobs, minQueued int) {
	t.Helper()
	// A job's queue wait is observed at the first reconcile that no longer
	// sees it queued: scrape until that has happened (or give up after a
	// while, and the check below says what is missing).
	var text string
	for deadline := time.Now().Add(20 * time.Second); ; {
		resp, err := c.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		text = string(b)
		if strings.Contains(text, `fireactions_job_queue_wait_seconds_count{pool="`+pool+`"}`) || time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	value := func(series string) float64 {
		re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`)
		m := re.FindStringSubmatch(text)
		if m == nil {
			t.Fatalf("metric %s missing; scrape:\n%s", series, grep(text, "fireactions_"))
		}
		v, _ := strconv.ParseFloat(m[1], 64)
		return v
	}
	p := `{pool="` + pool + `"}`
	if v := value("fireactions_vms_started_total" + p); v < float64(jobs) {
		t.Errorf("vms started %v < %d jobs", v, jobs)
	}
	// A job a waiting VM takes between two polls of the queue is never
	// seen queued; every job seen queued is counted when it leaves.
	if v := value("fireactions_job_queue_wait_seconds_count" + p); v < float64(minQueued) || v > float64(jobs) {
		t.Errorf("queue wait observed %v times, want %d..%d", v, minQueued, jobs)
	}
	for _, h := range []string{"fireactions_vm_provision_seconds", "fireactions_vm_boot_seconds", "fireactions_job_duration_seconds"} {
		n, sum := value(h+"_count"+p), value(h+"_sum"+p)
		if n < float64(jobs) || sum <= 0 || sum/n > 600 {
			t.Errorf("%s: count %v sum %v: want >= %d observations of a sane mean", h, n, sum, jobs)
		}
	}
	if v := value(`fireactions_runners{phase="idle",pool="` + pool + `"}`); v < 0 || v > 2 {
		t.Errorf("idle runners %v", v)
	}
	if v := value(`fireactions_forge_requests_total{forge="gitea",op="register"}`); v < float64(jobs) {
		t.Errorf("register calls %v", v)
	}
	value(`fireactions_forge_requests_total{forge="gitea",op="queued_jobs"}`)
	if v := value("fireactions_state_disk_free_bytes"); v <= 0 {
		t.Errorf("disk free %v", v)
	}
	if strings.Contains(text, `job="`) || strings.Contains(text, `vm="`) {
		t.Error("a metric carries a job or VM id label")
	}
}

func grep(text, substr string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
