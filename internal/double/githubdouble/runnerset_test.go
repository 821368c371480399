package githubdouble_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
)

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
