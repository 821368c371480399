package api

import (
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/metrics"
	"github.com/nixos-fireactions/nixos-fireactions/vmstate"
)

// fakeInsights is a fixed set of outcomes and distributions.
type fakeInsights struct{}

func (fakeInsights) RecentOutcomes() []metrics.Outcome {
	return []metrics.Outcome{
		{Time: testNow.Add(-time.Minute), Pool: "small", Reason: "boot_timeout"},
		{Time: testNow.Add(-2 * time.Minute), Pool: "big"},
	}
}

func (fakeInsights) Distributions() []metrics.Distribution {
	return []metrics.Distribution{
		{Metric: "fireactions_vm_boot_seconds", Title: "Boot time", Count: 3, Sum: 6,
			Buckets: []metrics.Bucket{{UpperBound: 1, Count: 0}, {UpperBound: 2.5, Count: 2}, {UpperBound: 6.25, Count: 1}}},
		{Metric: "fireactions_job_queue_wait_seconds", Title: "Queue wait"},
	}
}

// statusSecrets are credentials the backend holds that the page must
// never show: the API's tokens, and a VM's agent token and runner memo
// (the fake returns whole records, as a careless backend could).
var statusSecrets = []string{"first-token", "second-token-longer", "agent-secret-7f3a", "memo-secret-c91d"}

func statusHandler(t *testing.T) (http.Handler, *fakeBackend) {
	t.Helper()
	fixClock(t)
	b := newFakeBackend(testNow.Add(-90 * time.Second))
	b.vms[0].AgentToken, b.vms[0].RunnerMemo = "agent-secret-7f3a", "memo-secret-c91d"
	b.vms[0].Job = "4711"
	b.vms[1].Job = `<script>alert(1)</script>`
	h := NewHandler(Options{Backend: b, Tokens: []string{"first-token", "second-token-longer"}, Insights: fakeInsights{}}, true)
	return h, b
}

// leaked returns the secrets that appear in the page.
func leaked(page string) []string {
	var found []string
	for _, s := range statusSecrets {
		if strings.Contains(page, s) {
			found = append(found, s)
		}
	}
	return found
}

// The page needs the API's token (401 without, as every API path), and
// with it shows the pools, the VMs, the outcomes and two charts.
func TestStatusPageShowsTheHost(t *testing.T) {
	h, _ := statusHandler(t)
	for _, auth := range []string{"", "Bearer wrong"} {
		w := do(h, "GET", "/status", "", map[string]string{"Authorization": auth})
		if w.Code != http.StatusUnauthorized || strings.Contains(w.Body.String(), "<html") {
			t.Fatalf("auth %q: status %d, want 401 without the page", auth, w.Code)
		}
	}
	w := do(h, "GET", "/status", "", map[string]string{"Authorization": "Bearer second-token-longer"})
	if w.Code != http.StatusOK {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	if ct := w.Header().Get("Content-Type"); ct != "text/html; charset=utf-8" {
		t.Errorf("Content-Type %q", ct)
	}
	page := w.Body.String()
	for _, want := range []string{
		`<meta http-equiv="refresh" content="10">`,
		// pools: name, forge, scope, min idle, max, starting, idle, busy, queued
		`<tr data-pool="small"><td>small</td><td>gitea</td><td>org:acme</td><td class="n">1</td><td class="n">4</td><td class="n">0</td><td class="n">1</td><td class="n">1</td><td class="n">2</td>`,
		`<tr data-pool="big"><td>big</td>`,
		// state: a pool whose demand source was deleted says so; another runs
		`<td class="n">0</td><td class="n">0</td><td><span class="failed">demand source deleted</span></td></tr>`,
		`<td class="n">2</td><td class="n">0</td><td>running</td></tr>`,
		// VMs: id, pool, phase, age, job, runner
		`<tr data-vm="vm1"><td>vm1</td><td>small</td><td>busy</td><td class="n">1m30s</td><td>4711</td><td>fa-h-vm1</td></tr>`,
		`<tr data-vm="vm2"><td>vm2</td><td>small</td><td>idle</td><td class="n">1m0s</td>`,
		`<td>small</td><td class="failed">failed: boot_timeout</td>`,
		`<td>big</td><td>job ended</td>`,
		`<figure id="fireactions_vm_boot_seconds">`,
		`Boot time: 3 observed, mean 2s`,
		`<figure id="fireactions_job_queue_wait_seconds">`,
	} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %s", want)
		}
	}
	// The boot chart's bars: the tallest (2) fills the chart, the other
	// is half as high, the empty bucket has none.
	bars := regexp.MustCompile(`height="(\d+)" data-count="(\d+)"`).FindAllStringSubmatch(page, -1)
	var got []string
	for _, b := range bars {
		got = append(got, b[2]+":"+b[1])
	}
	if want := "0:0 2:78 1:39"; strings.Join(got, " ") != want {
		t.Errorf("bars count:height = %q, want %q", strings.Join(got, " "), want)
	}
}

// Nothing secret reaches the page, and nothing the guest reports runs in
// it. The positive control shows the check sees a secret that is there.
func TestStatusPageShowsNoSecret(t *testing.T) {
	h, b := statusHandler(t)
	w := do(h, "GET", "/status", "", map[string]string{"Authorization": "Bearer first-token"})
	page := w.Body.String()
	if w.Code != http.StatusOK || !strings.Contains(page, "vm1") {
		t.Fatalf("status %d, page without vm1: %s", w.Code, page)
	}
	if l := leaked(page); len(l) != 0 {
		t.Errorf("the page shows %q", l)
	}
	if strings.Contains(page, "<script>alert") || !strings.Contains(page, "&lt;script&gt;alert(1)&lt;/script&gt;") {
		t.Errorf("the guest's job id is not escaped")
	}
	// Nothing fetched from anywhere: no script, style sheet, image,
	// frame or URL but the SVG namespace; the CSP forbids them too.
	for _, bad := range []string{"<script", "<link", "<img", "<iframe", "src=", "url(", "https://"} {
		if strings.Contains(page, bad) {
			t.Errorf("the page contains %q", bad)
		}
	}
	if n := strings.Count(page, "http://"); n != strings.Count(page, `xmlns="http://www.w3.org/2000/svg"`) {
		t.Errorf("the page names a URL other than the SVG namespace")
	}
	if csp := w.Header().Get("Content-Security-Policy"); !strings.HasPrefix(csp, "default-src 'none'") {
		t.Errorf("CSP %q", csp)
	}

	// Positive control: a secret in a field the page shows is found.
	b.mu.Lock()
	b.vms[0].Job = "memo-secret-c91d"
	b.mu.Unlock()
	page = do(h, "GET", "/status", "", map[string]string{"Authorization": "Bearer first-token"}).Body.String()
	if l := leaked(page); len(l) != 1 || l[0] != "memo-secret-c91d" {
		t.Errorf("positive control: leaked = %q, want the memo", l)
	}
}

// Without insights the page still serves the pools and VMs.
func TestStatusPageWithoutInsights(t *testing.T) {
	fixClock(t)
	b := newFakeBackend(testNow)
	b.vms = append(b.vms, vmstate.Record{ID: "vm3", Pool: "big", Phase: vmstate.Booting})
	w := do(NewHandler(Options{Backend: b}, false), "GET", "/status", "", nil)
	page := w.Body.String()
	if w.Code != http.StatusOK || !strings.Contains(page, `data-vm="vm3"`) || !strings.Contains(page, "no distributions") {
		t.Fatalf("status %d, page %s", w.Code, page)
	}
}
