package githubdouble_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/nixos-fireactions/nixos-fireactions/internal/double/githubdouble"
)

// send makes a request with no body and the credential, and answers its
// status.
func send(t *testing.T, srv *httptest.Server, method, cred, path string) int {
	t.Helper()
	req, _ := http.NewRequest(method, srv.URL+path, nil)
	req.Header.Set("Authorization", "token "+cred)
	return do(t, req)
}

// Managing a scope's runners needs what GitHub's description of each
// runner operation asks for: of a PAT (classic) admin:org for an
// organization's runners, repo for a repository's,
// manage_runners:enterprise for an enterprise's (404 without it, as
// GitHub hides the resource); of an installation token
// organization_self_hosted_runners (an organization's) or administration
// (a repository's), read to list and write to register (403 without).
func TestManagingRunnersNeedsWhatGitHubAsks(t *testing.T) {
	d, srv, _, key := newDouble(t, func(o *githubdouble.Options) {
		o.PATs = []string{"ghp_org", "ghp_repo", "ghp_enterprise"}
		o.PATScopes = map[string][]string{"ghp_org": {"admin:org"}, "ghp_repo": {"repo"}, "ghp_enterprise": {"manage_runners:enterprise"}}
	})
	scopes := []struct{ base, pat string }{
		{"/orgs/acme/actions/runners", "ghp_org"},
		{"/repos/acme/widgets/actions/runners", "ghp_repo"},
		{"/enterprises/big/actions/runners", "ghp_enterprise"},
	}
	for _, s := range scopes {
		for _, pat := range []string{"ghp_org", "ghp_repo", "ghp_enterprise"} {
			list, token := http.StatusOK, http.StatusCreated
			if pat != s.pat {
				list, token = http.StatusNotFound, http.StatusNotFound
			}
			if code := send(t, srv, http.MethodGet, pat, s.base); code != list {
				t.Errorf("GET %s with %s: %d, want %d", s.base, pat, code, list)
			}
			if code := send(t, srv, http.MethodPost, pat, s.base+"/registration-token"); code != token {
				t.Errorf("POST %s/registration-token with %s: %d, want %d", s.base, pat, code, token)
			}
		}
	}

	inst := d.AddInstallation("Organization", "acme")
	_, writer := installationToken(t, srv, key, inst, nil) // the default: runners at write
	d.SetPermissions(inst, map[string]string{"organization_self_hosted_runners": "read", "administration": "read"})
	_, reader := installationToken(t, srv, key, inst, nil)
	d.SetPermissions(inst, map[string]string{"actions": "read"})
	_, neither := installationToken(t, srv, key, inst, nil)
	for _, base := range []string{"/orgs/acme/actions/runners", "/repos/acme/widgets/actions/runners"} {
		for _, c := range []struct {
			name, tok   string
			list, token int
		}{
			{"runners at write", writer, http.StatusOK, http.StatusCreated},
			{"runners at read", reader, http.StatusOK, http.StatusForbidden},
			{"no runner permission", neither, http.StatusForbidden, http.StatusForbidden},
		} {
			if code := send(t, srv, http.MethodGet, c.tok, base); code != c.list {
				t.Errorf("GET %s with an installation token, %s: %d, want %d", base, c.name, code, c.list)
			}
			if code := send(t, srv, http.MethodPost, c.tok, base+"/registration-token"); code != c.token {
				t.Errorf("POST %s/registration-token with an installation token, %s: %d, want %d", base, c.name, code, c.token)
			}
		}
	}
	for _, v := range d.Violations() {
		t.Errorf("violation: %s", v)
	}
}

// A remove token is for config.sh's remove: the Actions service registers
// no runner with it (401), as it does with a registration token of the
// same scope (201).
func TestARemoveTokenRegistersNoRunner(t *testing.T) {
	_, srv, _, _ := newDouble(t)
	for _, tc := range []struct {
		op   string
		want int
	}{{"registration-token", http.StatusCreated}, {"remove-token", http.StatusUnauthorized}} {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/orgs/acme/actions/runners/"+tc.op, nil)
		req.Header.Set("Authorization", "token "+pat)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var tok struct{ Token string }
		err = json.NewDecoder(resp.Body).Decode(&tok)
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated || err != nil || tok.Token == "" {
			t.Fatalf("POST %s: %d, token %q (%v)", tc.op, resp.StatusCode, tok.Token, err)
		}
		req, _ = http.NewRequest(http.MethodPost, srv.URL+"/actions/runner-registration",
			strings.NewReader(`{"url":"https://github.com/acme","runner_event":"register"}`))
		req.Header.Set("Authorization", "RemoteAuth "+tok.Token)
		if code := do(t, req); code != tc.want {
			t.Errorf("registering a runner with a %s: %d, want %d", tc.op, code, tc.want)
		}
	}
}

// do sends req and answers its status.
func do(t *testing.T, req *http.Request) int {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}
