package metrics

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/nixos-fireactions/nixos-fireactions/forge"
)

type plainForge struct{}

func (plainForge) Kind() string                                    { return "plain" }
func (plainForge) QueuedJobs(context.Context) ([]forge.Job, error) { return nil, nil }
func (plainForge) Register(context.Context, forge.RunnerSpec) (*forge.Runner, error) {
	return nil, nil
}
func (plainForge) Runners(context.Context, forge.Owner) ([]forge.RunnerState, error) { return nil, nil }
func (plainForge) Remove(context.Context, forge.RunnerRef) error                     { return nil }

type retiring struct {
	plainForge
	retired *[]string
}

func (r retiring) Retire(_ context.Context, ref forge.RunnerRef) error {
	*r.retired = append(*r.retired, ref.ID)
	return nil
}

// TestForgeWrapperKeepsWhatTheDriverIs: the counting wrapper is a
// forge.Retirer exactly when the scope is one (the pool asks the
// wrapper, not the scope), and counts retirements.
func TestForgeWrapperKeepsWhatTheDriverIs(t *testing.T) {
	var retired []string
	r := retiring{retired: &retired}
	tests := []struct {
		name    string
		driver  forge.Forge
		retires bool
	}{
		{"plain", plainForge{}, false},
		{"retirer", r, true},
	}
	m := New(t.TempDir())
	for _, tt := range tests {
		w := m.Forge(tt.name, "p", tt.driver)
		ret, retires := w.(forge.Retirer)
		if retires != tt.retires {
			t.Errorf("%s: wrapper is a Retirer %v; want %v", tt.name, retires, tt.retires)
		}
		if _, hooks := w.(forge.WebhookReceiver); hooks {
			t.Errorf("%s: a scope's wrapper takes webhooks; the forge's driver does", tt.name)
		}
		if retires {
			if err := ret.Retire(context.Background(), forge.RunnerRef{ID: tt.name}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if strings.Join(retired, ",") != "retirer" {
		t.Errorf("retirements reaching the drivers: %v", retired)
	}
	if n := requestsCounted(t, m, "retirer", "retire"); n != 1 {
		t.Errorf("retire requests counted for forge retirer: %v, want 1", n)
	}
}

// hooks is a forge's webhook endpoint that counts what reaches it.
type hooks struct{ served int }

func (h *hooks) ServeWebhook(w http.ResponseWriter, _ *http.Request, _ func()) {
	h.served++
	w.WriteHeader(http.StatusNoContent)
}

// TestWebhooksCountEachDeliveryOnce: the forge's endpoint wrapper counts a
// delivery once under op "webhook" and hands it on.
func TestWebhooksCountEachDeliveryOnce(t *testing.T) {
	m := New(t.TempDir())
	h := &hooks{}
	w := m.Webhooks("gl", h)
	for range 2 {
		w.ServeWebhook(httptest.NewRecorder(), httptest.NewRequest(http.MethodPost, "/webhooks/gl", nil), func() {})
	}
	if h.served != 2 {
		t.Fatalf("deliveries handed on: %d, want 2", h.served)
	}
	if n := requestsCounted(t, m, "gl", "webhook"); n != 2 {
		t.Fatalf("webhook deliveries counted: %v, want 2", n)
	}
}

// requestsCounted is fireactions_forge_requests_total{forge, op}.
func requestsCounted(t *testing.T, m *Metrics, forgeName, op string) float64 {
	t.Helper()
	return counted(t, m, "fireactions_forge_requests_total", forgeName, op)
}

// counted is the counter name{forge, op}.
func counted(t *testing.T, m *Metrics, name, forgeName, op string) float64 {
	t.Helper()
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, x := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range x.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["forge"] == forgeName && labels["op"] == op {
				return x.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// failingForge is a driver that can fail jobs; plainForge cannot.
type failingForge struct {
	plainForge
	failed []string
}

func (f *failingForge) FailJob(_ context.Context, r forge.RunnerRef, job, reason string) error {
	f.failed = append(f.failed, r.Name+"/"+job+": "+reason)
	return nil
}

// TestWrappedForgeKeepsItsWayToFailJobs: the pool finds a driver's
// FailJob through the metrics wrapper, and learns when there is none.
func TestWrappedForgeKeepsItsWayToFailJobs(t *testing.T) {
	m := New(t.TempDir())
	inner := &failingForge{}
	f, ok := m.Forge("gitea", "p", inner).(forge.JobFailer)
	if !ok {
		t.Fatal("the wrapper hides the driver's FailJob")
	}
	if err := f.FailJob(context.Background(), forge.RunnerRef{ID: "1", Name: "r"}, "42", "runner died"); err != nil {
		t.Fatal(err)
	}
	if len(inner.failed) != 1 || inner.failed[0] != "r/42: runner died" {
		t.Fatalf("driver saw %q", inner.failed)
	}
	plain := m.Forge("other", "p", plainForge{}).(forge.JobFailer)
	if err := plain.FailJob(context.Background(), forge.RunnerRef{ID: "1"}, "42", "x"); !errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("a driver without FailJob: err %v, want ErrUnsupported", err)
	}
}

// answeringForge fails jobs with a fixed answer.
type answeringForge struct {
	plainForge
	err error
}

func (f answeringForge) FailJob(context.Context, forge.RunnerRef, string, string) error { return f.err }

// TestFailJobAnswersAreNotErrors: a job that had ended, a runner whose
// credential did not outlive a restart, or a driver set not to fail jobs
// is the driver's answer, not a failed call: fail_job counts the request and no error; a real failure
// counts both. The wrapper hands every answer on unchanged.
func TestFailJobAnswersAreNotErrors(t *testing.T) {
	m := New(t.TempDir())
	for _, tc := range []struct {
		forge string
		err   error
		errs  float64
	}{
		{"ended", fmt.Errorf("github: run 7: %w", forge.ErrJobEnded), 0},
		{"nocred", fmt.Errorf("gitea: task 7: %w", forge.ErrNoCredential), 0},
		{"off", fmt.Errorf("github: cancel_runs is off: %w", errors.ErrUnsupported), 0},
		{"broken", errors.New("github: cancel run 7: 500"), 1},
		{"ok", nil, 0},
	} {
		f := m.Forge(tc.forge, "p", answeringForge{err: tc.err}).(forge.JobFailer)
		if err := f.FailJob(context.Background(), forge.RunnerRef{ID: "1", Name: "r"}, "", "runner died"); err != tc.err {
			t.Errorf("%s: the wrapper answered %v, want the driver's %v", tc.forge, err, tc.err)
		}
		if n := requestsCounted(t, m, tc.forge, "fail_job"); n != 1 {
			t.Errorf("%s: fail_job requests counted %v, want 1", tc.forge, n)
		}
		if n := counted(t, m, "fireactions_forge_errors_total", tc.forge, "fail_job"); n != tc.errs {
			t.Errorf("%s: fail_job errors counted %v, want %v", tc.forge, n, tc.errs)
		}
	}
}

type notifying struct {
	plainForge
	told *int
}

func (n notifying) NotifyQueue(func(forge.QueueChange)) { *n.told++ }

// The pool manager finds a driver that tells its queue changes
// (forge.QueueNotifier) through the counting wrapper, and only such a
// driver: without it, every delivery would cost a full reconcile again.
func TestWrappedDriverStillTellsItsQueueChanges(t *testing.T) {
	m := New(t.TempDir())
	told := 0
	n, ok := forge.NotifierOf(m.Forge("github", "p", notifying{told: &told}))
	if !ok {
		t.Fatal("the wrapped driver's QueueNotifier is not found")
	}
	n.NotifyQueue(nil)
	if told != 1 {
		t.Fatalf("NotifyQueue reached the driver %d times", told)
	}
	if _, ok := forge.NotifierOf(m.Forge("plain", "p", plainForge{})); ok {
		t.Fatal("a driver that tells nothing found as a QueueNotifier")
	}
}

// learningForge learns a runner's job (forge.JobLearner); plainForge
// does not.
type learningForge struct{ plainForge }

func (learningForge) LearnJob(_ context.Context, r forge.RunnerRef) (forge.RunnerMemo, error) {
	return r.Memo + "+job", nil
}

// TestWrappedForgeKeepsItsWayToLearnJobs: the pool finds a driver's
// LearnJob (GitLab's, which keeps the job of a runner it retires in the
// runner's memo) through the metrics wrapper; a driver without one
// answers ErrUnsupported with the memo unchanged.
func TestWrappedForgeKeepsItsWayToLearnJobs(t *testing.T) {
	m := New(t.TempDir())
	l, ok := m.Forge("gitlab", "p", learningForge{}).(forge.JobLearner)
	if !ok {
		t.Fatal("the wrapper hides the driver's LearnJob")
	}
	if memo, err := l.LearnJob(context.Background(), forge.RunnerRef{ID: "1", Memo: "m"}); err != nil || memo != "m+job" {
		t.Fatalf("LearnJob through the wrapper: %q, %v", string(memo), err)
	}
	if n := requestsCounted(t, m, "gitlab", "learn_job"); n != 1 {
		t.Errorf("learn_job requests counted %v, want 1", n)
	}
	plain := m.Forge("plain", "p", plainForge{}).(forge.JobLearner)
	if memo, err := plain.LearnJob(context.Background(), forge.RunnerRef{ID: "1", Memo: "m"}); !errors.Is(err, errors.ErrUnsupported) || memo != "m" {
		t.Fatalf("a driver without LearnJob: %q, %v; want the memo unchanged and ErrUnsupported", string(memo), err)
	}
}

// budgeted is a forge that knows its rate limit.
type budgeted struct {
	plainForge
	left int
}

func (b budgeted) RateLimitRemaining() int { return b.left }

// A configured pool's series exist at zero before anything happens to
// it, and its forge's rate limit reads -1 (unknown) until a call tells
// it; a later PoolSeries (a reload) does not forget what a call told.
func TestPoolSeriesStartAtZero(t *testing.T) {
	m := New(t.TempDir())
	scrape := func() string {
		rec := httptest.NewRecorder()
		m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		return rec.Body.String()
	}
	if s := scrape(); strings.Contains(s, `pool="a"`) || strings.Contains(s, "fireactions_forge_rate_limit_remaining{") {
		t.Fatalf("series before PoolSeries:\n%s", s)
	}
	m.PoolSeries("a", "github")
	s := scrape()
	for _, want := range []string{
		`fireactions_vms_started_total{pool="a"} 0`,
		`fireactions_vms_failed_total{pool="a",reason="crashed"} 0`,
		`fireactions_vms_failed_total{pool="a",reason="stopped"} 0`,
		`fireactions_host_shortages_total{cause="disk",pool="a"} 0`,
		`fireactions_vm_record_save_failures_total{pool="a"} 0`,
		`fireactions_vm_boot_seconds_count{pool="a"} 0`,
		`fireactions_job_queue_wait_seconds_count{pool="a"} 0`,
		`fireactions_vm_provision_seconds_count{pool="a"} 0`,
		`fireactions_job_duration_seconds_count{pool="a"} 0`,
		`fireactions_forge_rate_limit_remaining{forge="github",pool="a"} -1`,
	} {
		if !strings.Contains(s, want) {
			t.Errorf("scrape lacks %s", want)
		}
	}
	// A call to gitlab tells its budget before gitlab's first pool is
	// set up (a reload that adds one).
	f := m.Forge("gitlab", "b", budgeted{left: 4000})
	if _, err := f.QueuedJobs(context.Background()); err != nil {
		t.Fatal(err)
	}
	m.PoolSeries("b", "gitlab")
	if s := scrape(); !strings.Contains(s, `fireactions_forge_rate_limit_remaining{forge="gitlab",pool="b"} 4000`) {
		t.Errorf("the rate limit a call told was reset:\n%s", s)
	}
	// The call's error counter exists at 0 (an error ratio reads 0).
	if s := scrape(); !strings.Contains(s, `fireactions_forge_errors_total{forge="gitlab",op="queued_jobs"} 0`) {
		t.Errorf("no error series at 0 after a good call:\n%s", s)
	}
}

// Two pools of one forge on different credentials (GitHub App
// installations) have their own budgets: each keeps its own gauge, not
// one series per forge flipping between the two.
func TestRateLimitGaugeIsPerPool(t *testing.T) {
	m := New(t.TempDir())
	m.PoolSeries("a", "github")
	m.PoolSeries("b", "github")
	a := m.Forge("github", "a", budgeted{left: 50})
	b := m.Forge("github", "b", budgeted{left: 4000})
	for _, f := range []forge.Forge{a, b, a} {
		if _, err := f.QueuedJobs(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	for _, want := range []string{
		`fireactions_forge_rate_limit_remaining{forge="github",pool="a"} 50`,
		`fireactions_forge_rate_limit_remaining{forge="github",pool="b"} 4000`,
	} {
		if !strings.Contains(rec.Body.String(), want) {
			t.Errorf("scrape lacks %s", want)
		}
	}
}

// A reload that removes a pool, or moves it to another forge, drops its
// rate-limit gauge: a last low budget left behind would page for ever.
func TestRemovedPoolsRateLimitGaugeGoes(t *testing.T) {
	m := New(t.TempDir())
	for _, p := range []string{"a", "b", "c"} {
		if _, err := m.Forge("github", p, budgeted{left: 50}).QueuedJobs(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	m.RetainRateLimits(map[string]string{"a": "github", "c": "gitea"})
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	s := rec.Body.String()
	if !strings.Contains(s, `fireactions_forge_rate_limit_remaining{forge="github",pool="a"} 50`) {
		t.Errorf("a kept pool's gauge went:\n%s", s)
	}
	for _, gone := range []string{`forge="github",pool="b"`, `forge="github",pool="c"`} {
		if strings.Contains(s, gone) {
			t.Errorf("gauge {%s} stayed after its pool went", gone)
		}
	}
}
