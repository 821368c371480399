package githubdouble_test

import (
	"bytes"
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/bradleyfalzon/ghinstallation/v2"

	"github.com/nixos-fireactions/nixos-fireactions/internal/double/githubdouble"
)

// installationToken creates a token for the installation as the App
// does, asking for perms (nil: all the installation has).
func installationToken(t *testing.T, srv *httptest.Server, key *rsa.PrivateKey, inst int64, perms map[string]string) (int, string) {
	t.Helper()
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	appTr, err := ghinstallation.NewAppsTransport(http.DefaultTransport, 9, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	body := map[string]any{}
	if perms != nil {
		body["permissions"] = perms
	}
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest(http.MethodPost, fmt.Sprintf("%s/app/installations/%d/access_tokens", srv.URL, inst), bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	resp, err := appTr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct{ Token string }
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out.Token
}

// Cancelling a workflow run needs what GitHub asks for: an App
// installation token with actions:write (403 otherwise, as GitHub
// answers an integration), or a PAT (classic) with the repo scope (404
// otherwise). A token asked for with fewer permissions than its
// installation has holds only those, and a token cannot be asked for
// more than the installation was granted.
func TestCancellingARunNeedsActionsWrite(t *testing.T) {
	d, srv, _, key := newDouble(t, func(o *githubdouble.Options) {
		o.PATs = []string{"ghp_runners_only", "ghp_repo"}
		o.PATScopes = map[string][]string{"ghp_runners_only": {"admin:org"}, "ghp_repo": {"repo"}}
	})
	inst := d.AddInstallation("Organization", "acme")
	cancel := func(cred string, op string) int {
		run := d.QueueJob("acme/widgets", "linux").RunID
		return send(t, srv, http.MethodPost, cred, fmt.Sprintf("/repos/acme/widgets/actions/runs/%d/%s", run, op))
	}
	_, readOnly := installationToken(t, srv, key, inst, nil) // the installation may read Actions only
	for _, op := range []string{"cancel", "force-cancel"} {
		if code := cancel(readOnly, op); code != http.StatusForbidden {
			t.Errorf("%s with a token of an installation without actions:write: %d, want 403", op, code)
		}
		if code := cancel("ghp_runners_only", op); code != http.StatusNotFound {
			t.Errorf("%s with a PAT without the repo scope: %d, want 404", op, code)
		}
		if code := cancel("ghp_repo", op); code != http.StatusAccepted {
			t.Errorf("%s with a PAT with the repo scope: %d, want 202", op, code)
		}
	}
	if code, _ := installationToken(t, srv, key, inst, map[string]string{"actions": "write"}); code != http.StatusUnprocessableEntity {
		t.Errorf("a token asking for actions:write the installation lacks: %d, want 422", code)
	}
	d.SetPermissions(inst, map[string]string{"organization_self_hosted_runners": "write", "actions": "write"})
	if code := cancel(readOnly, "cancel"); code != http.StatusForbidden {
		t.Errorf("cancel with a token made before actions:write was granted: %d, want 403", code)
	}
	_, narrowed := installationToken(t, srv, key, inst, map[string]string{"actions": "read"})
	if code := cancel(narrowed, "cancel"); code != http.StatusForbidden {
		t.Errorf("cancel with a token asked for actions:read: %d, want 403", code)
	}
	_, writer := installationToken(t, srv, key, inst, nil)
	for _, op := range []string{"cancel", "force-cancel"} {
		if code := cancel(writer, op); code != http.StatusAccepted {
			t.Errorf("%s with a token of an installation with actions:write: %d, want 202", op, code)
		}
	}
	other := d.AddInstallation("Organization", "elsewhere")
	d.SetPermissions(other, map[string]string{"actions": "write"})
	_, foreign := installationToken(t, srv, key, other, nil)
	if code := cancel(foreign, "cancel"); code != http.StatusForbidden {
		t.Errorf("cancel in acme with another org's installation token: %d, want 403", code)
	}
	for _, v := range d.Violations() {
		t.Errorf("violation: %s", v)
	}
}

// A cancel ends the run's queued jobs at once, but a running job ends
// only when its runner says so: a job whose runner died keeps running
// (GitHub gives up on it after its cancellation timeout). A force-cancel
// ends it at once and frees its runner. A completed run cannot be
// cancelled either way (409).
func TestCancelWaitsForTheRunnerForceCancelDoesNot(t *testing.T) {
	d, srv, _, _ := newDouble(t)
	jobs := d.QueueRun("acme/widgets",
		githubdouble.JobSpec{Name: "fork-bomb", Labels: []string{"linux"}, KillsRunner: true},
		githubdouble.JobSpec{Name: "later", Labels: []string{"gpu"}})
	jit, runnerID := generateJIT(t, srv, "fa-dies")
	var out bytes.Buffer
	err := githubdouble.RunStandIn(context.Background(), githubdouble.StandIn{JIT: jit, Out: &out})
	if !errors.Is(err, githubdouble.ErrKilledByJob) {
		t.Fatalf("the stand-in whose job kills it: %v", err)
	}
	path := fmt.Sprintf("/repos/acme/widgets/actions/runs/%d/", jobs[0].RunID)
	status := func() map[int64]string {
		out := map[int64]string{}
		for _, j := range d.Jobs() {
			out[j.ID] = j.Status + "/" + j.Conclusion
		}
		return out
	}
	if code := send(t, srv, http.MethodPost, pat, path+"cancel"); code != http.StatusAccepted {
		t.Fatalf("cancel: %d", code)
	}
	st := status()
	if st[jobs[0].ID] != "in_progress/" || st[jobs[1].ID] != "completed/cancelled" {
		t.Fatalf("after cancel: dead runner's job %s, queued job %s", st[jobs[0].ID], st[jobs[1].ID])
	}
	if r, _ := d.RunByID(jobs[0].RunID); r.Status != "in_progress" || !r.Cancelling {
		t.Fatalf("after cancel the run is %+v, want in_progress and cancelling", r)
	}
	if code := send(t, srv, http.MethodPost, pat, path+"force-cancel"); code != http.StatusAccepted {
		t.Fatalf("force-cancel: %d", code)
	}
	if st := status(); st[jobs[0].ID] != "completed/cancelled" {
		t.Fatalf("after force-cancel the dead runner's job is %s", st[jobs[0].ID])
	}
	if r, _ := d.RunByID(jobs[0].RunID); r.Status != "completed" || r.Conclusion != "cancelled" {
		t.Fatalf("after force-cancel the run is %+v", r)
	}
	for _, r := range d.Runners() {
		if r.ID == runnerID && r.Busy {
			t.Fatal("the force-cancelled job's runner is still busy")
		}
	}
	for _, op := range []string{"cancel", "force-cancel"} {
		if code := send(t, srv, http.MethodPost, pat, path+op); code != http.StatusConflict {
			t.Errorf("%s of a completed run: %d, want 409", op, code)
		}
	}
	for _, v := range d.Violations() {
		t.Errorf("violation: %s", v)
	}
}

// A live runner told to cancel stops its job: the job and the run end as
// cancelled, not as the runner's own result.
func TestALiveRunnerStopsItsCancelledJob(t *testing.T) {
	d, srv, _, _ := newDouble(t)
	job := d.QueueJob("acme/widgets", "linux")
	if code := send(t, srv, http.MethodPost, pat, fmt.Sprintf("/repos/acme/widgets/actions/runs/%d/cancel", job.RunID)); code != http.StatusAccepted {
		t.Fatalf("cancel: %d", code)
	}
	jobs := d.QueueRun("acme/widgets", githubdouble.JobSpec{Labels: []string{"linux"}}, githubdouble.JobSpec{Labels: []string{"gpu"}})
	jit, _ := generateJIT(t, srv, "fa-live")
	d.OnAcquire(func(j githubdouble.Job) { // as the runner starts the job, someone cancels the run
		if code := send(t, srv, http.MethodPost, pat, fmt.Sprintf("/repos/acme/widgets/actions/runs/%d/cancel", j.RunID)); code != http.StatusAccepted {
			t.Errorf("cancel: %d", code)
		}
	})
	if err := githubdouble.RunStandIn(context.Background(), githubdouble.StandIn{JIT: jit, Out: io.Discard}); err != nil {
		t.Fatal(err)
	}
	for _, j := range d.Jobs() {
		if (j.ID == jobs[0].ID || j.ID == jobs[1].ID || j.ID == job.ID) && j.Conclusion != "cancelled" {
			t.Errorf("job %d ended %s/%s, want cancelled", j.ID, j.Status, j.Conclusion)
		}
	}
	if r, _ := d.RunByID(jobs[0].RunID); r.Status != "completed" || r.Conclusion != "cancelled" {
		t.Fatalf("the run is %+v, want completed and cancelled", r)
	}
}
