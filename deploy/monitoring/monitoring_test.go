package monitoring

import (
	"context"
	"errors"
	"net/http/httptest"
	"os"
	"os/exec"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/forge"
	"github.com/nixos-fireactions/nixos-fireactions/metrics"
	"github.com/nixos-fireactions/nixos-fireactions/pool"
	"github.com/nixos-fireactions/nixos-fireactions/vmstate"
)

func TestMetricNames(t *testing.T) {
	for expr, want := range map[string][]string{
		`up{job="fireactions"} == 0 or absent(up{job="fireactions"})`:                                                             {"up"},
		`histogram_quantile(0.95, sum by (pool, le) (rate(fireactions_vm_boot_seconds_bucket{pool=~"$pool"}[$__rate_interval])))`: {"fireactions_vm_boot_seconds_bucket"},
		`sum(increase(a_total[1h] offset 1d)) by (pool) / on (pool) group_left(x) clamp_min(b, 1) > 1e3`:                          {"a_total", "b"},
		`predict_linear(free[6h], 4 * 3600) < 0 and label_replace(c, "d", "$1", "e", "(.*)")`:                                     {"c", "free"},
		`max by (instance, pool) (fireactions_pool_paused) == 1 unless on (instance, pool) bool_metric`:                           {"bool_metric", "fireactions_pool_paused"},
	} {
		if got := MetricNames(expr); !reflect.DeepEqual(got, want) {
			t.Errorf("MetricNames(%s) = %q, want %q", expr, got, want)
		}
	}
}

func TestUnexported(t *testing.T) {
	scrape := "# HELP a_total x\n# TYPE a_total counter\na_total{pool=\"p\"} 1\nb 2\n"
	if got := Unexported([]string{"a_total", "b", "up", "c", "HELP"}, scrape); !reflect.DeepEqual(got, []string{"HELP", "c"}) {
		t.Errorf("Unexported = %q, want HELP and c", got)
	}
}

// promtool checks the rules and runs their unit tests (alerts_test.yml:
// each alert fires on the series that should fire it and stays quiet on
// the others). Without promtool the test fails: a skip would pass rules
// nobody checked.
func TestRulesPassPromtool(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool is absent: run scripts/install-deps.sh (it takes promtool out of Debian's prometheus package); the alert rules are not checked")
	}
	for _, args := range [][]string{{"check", "rules", "alerts.yml"}, {"test", "rules", "alerts_test.yml"}} {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		out, err := exec.CommandContext(ctx, promtool, args...).CombinedOutput()
		cancel()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// Every alert has a runbook in docs/alerts.md and at least one promtool
// test that expects it to fire.
func TestEveryAlertHasARunbookAndAFiringTest(t *testing.T) {
	rules, err := Rules()
	if err != nil {
		t.Fatal(err)
	}
	if len(rules) < 7 {
		t.Fatalf("%d rules, want the 7 the issue names at least", len(rules))
	}
	doc, err := os.ReadFile("../../docs/alerts.md")
	if err != nil {
		t.Fatal(err)
	}
	tests, err := os.ReadFile("alerts_test.yml")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rules {
		if !strings.Contains(string(doc), "\n## "+r.Alert+"\n") {
			t.Errorf("docs/alerts.md has no section ## %s", r.Alert)
		}
		firing := regexp.MustCompile(`alertname: ` + r.Alert + `\n\s+exp_alerts:\n\s+- exp_labels`)
		if !firing.Match(tests) {
			t.Errorf("alerts_test.yml has no test where %s fires", r.Alert)
		}
	}
}

// quietForge is a forge with nothing queued.
type quietForge struct{}

func (quietForge) Kind() string                                    { return "quiet" }
func (quietForge) QueuedJobs(context.Context) ([]forge.Job, error) { return nil, nil }
func (quietForge) Register(context.Context, forge.RunnerSpec) (*forge.Runner, error) {
	return nil, errors.New("not in this test")
}
func (quietForge) Runners(context.Context, forge.Owner) ([]forge.RunnerState, error) { return nil, nil }
func (quietForge) Remove(context.Context, forge.RunnerRef) error                     { return nil }

// fixedPools is one pool for the scrape-time collector.
type fixedPools struct{}

func (fixedPools) Pools() []pool.PoolStatus {
	return []pool.PoolStatus{{Name: "p", Forge: "f", Max: 2, VMs: map[vmstate.Phase]int{}}}
}

// ShippedMetricNames are the metric names the rules and the dashboard
// read; the end-to-end test checks them against a running orchestrator.
func shippedMetricNames(t *testing.T) []string {
	t.Helper()
	names, err := ShippedMetricNames()
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// TestShippedQueriesReadExportedMetrics: every metric the rules and the
// dashboard read is one the metrics package exports for a configured
// pool (the end-to-end test checks the same against a running
// orchestrator's scrape).
func TestShippedQueriesReadExportedMetrics(t *testing.T) {
	m := metrics.New(t.TempDir())
	m.WatchPools(fixedPools{})
	m.PoolSeries("p", "f")
	if _, err := m.Forge("f", "p", quietForge{}).QueuedJobs(context.Background()); err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	names := shippedMetricNames(t)
	if len(names) < 15 {
		t.Fatalf("the rules and dashboard read only %q", names)
	}
	if u := Unexported(names, rec.Body.String()); len(u) != 0 {
		t.Errorf("the rules or the dashboard read metrics nothing exports: %q", u)
	}
	// Positive control: a misspelt name is caught.
	if u := Unexported([]string{"fireactions_vms_start_total"}, rec.Body.String()); len(u) != 1 {
		t.Errorf("a misspelt metric passed")
	}
}

// The dashboard's queries: each panel's, and its variables' selectors.
func TestDashboardQueries(t *testing.T) {
	qs, err := DashboardQueries()
	if err != nil {
		t.Fatal(err)
	}
	all := strings.Join(qs, "\n")
	for _, want := range []string{"fireactions_vm_boot_seconds_bucket", "fireactions_job_queue_wait_seconds_bucket", `fireactions_runners{instance=~"$instance"}`} {
		if !strings.Contains(all, want) {
			t.Errorf("no dashboard query reads %s", want)
		}
	}
	if strings.Contains(all, "label_values") {
		t.Errorf("a variable's query was taken whole: %s", all)
	}
}
