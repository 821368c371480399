package githubdouble_test

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/bradleyfalzon/ghinstallation/v2"
)

// Where GitHub's description marks an operation
// x-github.enabledForGitHubApps: false (the enterprise runner API) an App
// installation token is refused with GitHub's 403 "Resource not
// accessible by integration", even the token of an installation on that
// enterprise; a personal access token is served there, and the same
// installation tokens are served where the operation is enabled.
func TestInstallationTokensOnlyWhereEnabledForGitHubApps(t *testing.T) {
	d, srv, spec, key := newDouble(t)
	entInst := d.AddInstallation("Enterprise", "bigco")
	orgInst := d.AddInstallation("Organization", "acme")
	job := d.QueueJob("acme/widgets", "linux")
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	appTr, err := ghinstallation.NewAppsTransport(http.DefaultTransport, 9, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	appTr.BaseURL = srv.URL
	installed := func(id int64) http.RoundTripper {
		tr := ghinstallation.NewFromAppsTransport(appTr, id)
		tr.BaseURL = srv.URL
		return tr
	}
	send := func(tr http.RoundTripper, method, path string, body any, auth string) (int, string) {
		t.Helper()
		var rd io.Reader
		if body != nil {
			b, _ := json.Marshal(body)
			rd = bytes.NewReader(b)
		}
		req, _ := http.NewRequest(method, srv.URL+path, rd)
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	jit := map[string]any{"name": "fixture", "runner_group_id": 1, "labels": []string{"custom-1"}}

	// Positive controls: a PAT on the enterprise, the org's token on the org.
	if code, b := send(http.DefaultTransport, http.MethodPost, "/enterprises/bigco/actions/runners/generate-jitconfig", jit, "token "+pat); code != http.StatusCreated {
		t.Fatalf("PAT on the enterprise: %d %s", code, b)
	}
	if code, b := send(installed(orgInst), http.MethodPost, "/orgs/acme/actions/runners/generate-jitconfig", jit, ""); code != http.StatusCreated {
		t.Fatalf("installation token on its org: %d %s", code, b)
	}
	runner := d.Runners()[0].ID

	refused := 0
	for _, op := range spec.Operations() {
		if op.EnabledForGitHubApps || strings.HasPrefix(op.ID, "apps/") { // apps/*: the App's JWT, not a token
			continue
		}
		path := fill(op.Template, runner, entInst, job)
		var body any
		if op.Method == http.MethodPost || op.Method == http.MethodPut {
			body = op.RequestExample()
		}
		code, b := send(installed(entInst), op.Method, path, body, "")
		if code != http.StatusForbidden || !strings.Contains(b, "Resource not accessible by integration") {
			t.Errorf("%s %s with the enterprise installation's token: %d %s", op.Method, path, code, b)
		}
		refused++
	}
	if refused < 13 { // the enterprise runner operations of the description
		t.Fatalf("%d operations refused to installation tokens, want the 13 enterprise runner ones", refused)
	}
	if n := len(d.Runners()); n != 2 {
		t.Fatalf("%d runners: a refused call acted", n)
	}
}
