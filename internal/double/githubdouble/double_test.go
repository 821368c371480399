package githubdouble_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"testing"

	"github.com/bradleyfalzon/ghinstallation/v2"

	"github.com/nixos-fireactions/nixos-fireactions/internal/double/githubdouble"
	"github.com/nixos-fireactions/nixos-fireactions/internal/double/githubdouble/openapi"
)

const pat = "ghp_double_test"

func newDouble(t testing.TB, mod ...func(*githubdouble.Options)) (*githubdouble.Double, *httptest.Server, *openapi.Description, *rsa.PrivateKey) {
	t.Helper()
	spec, err := githubdouble.LoadSpec("../../../forge/github/testdata/github-actions-runners.openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	var d *githubdouble.Double
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { d.ServeHTTP(w, r) }))
	o := githubdouble.Options{Spec: spec, AppID: 9, AppKey: &key.PublicKey, PATs: []string{pat}, RunnerURL: srv.URL}
	for _, m := range mod {
		m(&o)
	}
	d = githubdouble.New(o)
	t.Cleanup(func() { srv.Close(); d.Close() })
	return d, srv, spec, key
}

// The double serves every operation of the description: each answers a
// request built from the description's own example with a success, and
// no exchange departs from the description.
func TestEveryOperationIsServed(t *testing.T) {
	d, srv, spec, key := newDouble(t)
	d.AddInstallation("Organization", "acme")
	d.AddInstallation("Enterprise", "bigco")
	inst := d.AddInstallation("User", "octocat")
	// The description's example token asks for these: granted.
	d.SetPermissions(inst, map[string]string{"issues": "write", "contents": "read"})
	job := d.QueueJob("acme/widgets", "linux")

	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	appTr, err := ghinstallation.NewAppsTransport(http.DefaultTransport, 9, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	call := func(op *openapi.Operation, path string, body any) (int, []byte) {
		var rd io.Reader
		if body != nil {
			b, _ := json.Marshal(body)
			rd = bytes.NewReader(b)
		}
		req, _ := http.NewRequest(op.Method, srv.URL+path, rd)
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		tr := http.DefaultTransport
		if strings.HasPrefix(op.ID, "apps/") && op.ID != "apps/list-repos-accessible-to-installation" {
			tr = appTr
		} else {
			req.Header.Set("Authorization", "token "+pat)
		}
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatalf("%s: %v", op.ID, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	// A runner at each scope for the runner operations, labelled custom-1.
	runnerIDs := map[string]int64{}
	ops := spec.Operations()
	for _, op := range ops {
		if !strings.HasSuffix(op.Template, "/generate-jitconfig") {
			continue
		}
		path := fill(op.Template, 0, inst, job)
		code, b := call(op, path, map[string]any{"name": "fixture", "runner_group_id": 1, "labels": []string{"custom-1"}})
		var out struct{ Runner struct{ ID int64 } }
		if code != http.StatusCreated || json.Unmarshal(b, &out) != nil {
			t.Fatalf("%s: %d %s", op.ID, code, b)
		}
		runnerIDs[strings.SplitN(op.Template, "/", 3)[1]] = out.Runner.ID
	}
	// Deletions last, a runner's labels before the runner.
	sort.SliceStable(ops, func(i, j int) bool { return rank(ops[i]) < rank(ops[j]) })
	served := 0
	for _, op := range ops {
		if !githubdouble.HasHandler(op.ID) {
			t.Errorf("%s %s (%s) is not served", op.Method, op.Template, op.ID)
			continue
		}
		target := job
		if strings.HasSuffix(op.Template, "cancel") { // a run is cancelled once: each its own
			target = d.QueueJob("acme/widgets", "linux")
		}
		path := fill(op.Template, runnerIDs[strings.SplitN(op.Template, "/", 3)[1]], inst, target)
		code, b := call(op, path, op.RequestExample())
		if code/100 != 2 {
			t.Errorf("%s %s: %d %s", op.Method, path, code, b)
		}
		served++
	}
	if served != len(spec.Operations()) || served < 45 {
		t.Fatalf("served %d of %d operations", served, len(spec.Operations()))
	}
	for _, v := range d.Violations() {
		t.Errorf("violation: %s", v)
	}
}

// rank orders the operations so each finds its fixture: a runner's
// custom-1 label is removed before labels are replaced, and runners go
// last.
func rank(op *openapi.Operation) int {
	labels := strings.Contains(op.Template, "/labels")
	switch {
	case op.Method == http.MethodDelete && strings.Contains(op.Template, "/labels/"):
		return 1
	case op.Method == http.MethodPut && labels:
		return 2
	case op.Method == http.MethodDelete && labels:
		return 3
	case op.Method == http.MethodDelete:
		return 4
	}
	return 0
}

// fill puts values for the fixtures in a path template.
func fill(tmpl string, runner, inst int64, job githubdouble.Job) string {
	return strings.NewReplacer(
		"{org}", "acme", "{owner}", "acme", "{repo}", "widgets", "{enterprise}", "bigco",
		"{username}", "octocat", "{runner_id}", fmt.Sprint(runner), "{installation_id}", fmt.Sprint(inst),
		"{run_id}", fmt.Sprint(job.RunID), "{job_id}", fmt.Sprint(job.ID), "{name}", "custom-1", "{version}", "2.300.0",
	).Replace(tmpl)
}

// The stand-in runner, given its JIT configuration, takes a queued job
// its labels fit, runs it and reports; the ephemeral runner is then gone.
func TestStandInRunsOneJob(t *testing.T) {
	d, srv, _, _ := newDouble(t)
	jit, _ := generateJIT(t, srv, "fa-1")
	other := d.QueueJob("acme/widgets", "gpu") // labels do not fit
	job := d.QueueJob("acme/widgets", "linux")
	var out bytes.Buffer
	if err := githubdouble.RunStandIn(context.Background(), githubdouble.StandIn{JIT: jit, Argv: []string{"run.sh"}, Out: &out}); err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{"Listening for Jobs", "Running job: build"} {
		if !strings.Contains(out.String(), line) {
			t.Fatalf("output lacks %q:\n%s", line, out.String())
		}
	}
	reps := d.Reports()
	if len(reps) != 1 || !reps[0].Issued || reps[0].JobID != job.ID || reps[0].RunnerName != "fa-1" {
		t.Fatalf("reports %+v", reps)
	}
	for _, j := range d.Jobs() {
		if j.ID == job.ID && (j.Status != "completed" || j.RunnerName != "fa-1") || j.ID == other.ID && j.Status != "queued" {
			t.Fatalf("job %+v", j)
		}
	}
	if n := len(d.Runners()); n != 0 {
		t.Fatalf("%d runners after the ephemeral runner's job", n)
	}
	if _, _, err := githubdouble.DecodeJIT("bm90IGEgbWFw"); err == nil {
		t.Fatal("a JIT configuration that is no JSON map decoded")
	}
}

// generateJIT asks the double for a JIT runner named name in
// acme/widgets, as the driver does, and returns its configuration and id.
func generateJIT(t *testing.T, srv *httptest.Server, name string) (string, int64) {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"name": name, "runner_group_id": 1, "labels": []string{"self-hosted", "Linux"}})
	resp := call(t, srv, http.MethodPost, "/repos/acme/widgets/actions/runners/generate-jitconfig", body)
	defer resp.Body.Close()
	var out struct {
		Runner struct {
			ID int64 `json:"id"`
		} `json:"runner"`
		Config string `json:"encoded_jit_config"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || out.Config == "" {
		t.Fatalf("generate-jitconfig %s: %s: %v", name, resp.Status, err)
	}
	return out.Config, out.Runner.ID
}

func call(t *testing.T, srv *httptest.Server, method, path string, body []byte) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(method, srv.URL+path, bytes.NewReader(body))
	req.Header.Set("Authorization", "token "+pat)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// A name registered again (the driver's retry after a lost answer: the
// runner removed, then generated anew) maps to its latest JIT
// configuration, whatever the order the double's records come in.
func TestIssuedJITsMapANameToItsLatest(t *testing.T) {
	d, srv, _, _ := newDouble(t)
	first, id := generateJIT(t, srv, "fa-again")
	resp := call(t, srv, http.MethodDelete, fmt.Sprintf("/repos/acme/widgets/actions/runners/%d", id), nil)
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("delete runner %d: %s", id, resp.Status)
	}
	latest, _ := generateJIT(t, srv, "fa-again")
	if latest == first {
		t.Fatal("the double issued the same JIT configuration twice")
	}
	for range 50 { // map iteration order varies from call to call
		if got := d.IssuedJITs()["fa-again"]; got != latest {
			t.Fatalf("IssuedJITs maps fa-again to the first JIT configuration, want the latest")
		}
	}
}

// A runner's name is one runner's within its scope, as GitHub's
// "Already exists" says: a second JIT registration of the name is
// refused (409) in that scope and not in another, and frees up when the
// runner is removed; the runner's credential stops naming it then. The
// double finds names by an index (runnerset.go), which must answer as
// a scan of every runner would.
func TestRunnerNamesAreOneRunnersPerScope(t *testing.T) {
	_, srv, _, _ := newDouble(t)
	register := func(prefix, name string) (int, int64) {
		t.Helper()
		body, _ := json.Marshal(map[string]any{"name": name, "runner_group_id": 1, "labels": []string{"self-hosted"}})
		resp := call(t, srv, http.MethodPost, prefix+"/actions/runners/generate-jitconfig", body)
		defer resp.Body.Close()
		var out struct {
			Runner struct {
				ID int64 `json:"id"`
			} `json:"runner"`
		}
		json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out.Runner.ID
	}
	named := func(prefix, name string) int {
		t.Helper()
		resp := call(t, srv, http.MethodGet, prefix+"/actions/runners?name="+name, nil)
		defer resp.Body.Close()
		var out struct {
			Total int `json:"total_count"`
		}
		json.NewDecoder(resp.Body).Decode(&out)
		return out.Total
	}
	const repo, org = "/repos/acme/widgets", "/orgs/acme"
	code, id := register(repo, "fa-dup")
	if code != http.StatusCreated {
		t.Fatalf("first registration: %d", code)
	}
	if code, _ := register(repo, "fa-dup"); code != http.StatusConflict {
		t.Fatalf("the name again in its scope: %d, want 409", code)
	}
	if code, _ := register(repo, "fa-other"); code != http.StatusCreated {
		t.Fatalf("another name in the scope: %d, want 201", code)
	}
	if code, _ := register(org, "fa-dup"); code != http.StatusCreated {
		t.Fatalf("the name in another scope (the org): %d, want 201", code)
	}
	resp := call(t, srv, http.MethodDelete, fmt.Sprintf("%s/actions/runners/%d", repo, id), nil)
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("delete: %s", resp.Status)
	}
	if n := named(repo, "fa-dup"); n != 0 {
		t.Fatalf("%d runners named fa-dup listed after its removal", n)
	}
	if code, _ := register(repo, "fa-dup"); code != http.StatusCreated {
		t.Fatalf("the name again after its runner's removal: %d, want 201", code)
	}
	if code, _ := register(repo, "fa-dup"); code != http.StatusConflict {
		t.Fatalf("the name a third time: %d, want 409", code)
	}
	if n := named(repo, "fa-dup"); n != 1 {
		t.Fatalf("%d runners named fa-dup listed, want 1", n)
	}
}

// BenchmarkJITRegistrationAmongRunners: one generate-jitconfig request
// served (straight to the handler, no network) while a repository
// already has 1,000 runners, as in a burst of VM starts.
// Run: go test -run '^$' -bench JITRegistrationAmongRunners ./internal/double/githubdouble
func BenchmarkJITRegistrationAmongRunners(b *testing.B) {
	d, _, _, _ := newDouble(b)
	register := func(name string) {
		body := fmt.Appendf(nil, `{"name":%q,"runner_group_id":1,"labels":["self-hosted"]}`, name)
		req := httptest.NewRequest(http.MethodPost, "/repos/acme/widgets/actions/runners/generate-jitconfig", bytes.NewReader(body))
		req.Header.Set("Authorization", "token "+pat)
		req.Header.Set("Content-Type", "application/json")
		w := httptest.NewRecorder()
		d.ServeHTTP(w, req)
		if w.Code != http.StatusCreated {
			b.Fatalf("register %s: %d %s", name, w.Code, w.Body)
		}
	}
	for i := range 1000 {
		register(fmt.Sprintf("fa-present-%d", i))
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		register(fmt.Sprintf("fa-bench-%d", i))
	}
}
