package gitlabdouble

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// postGraphQL sends a query with a token and returns the status and the
// decoded answer.
func postGraphQL(t *testing.T, url, token, query string, vars map[string]any) (int, map[string]any) {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"query": query, "variables": vars})
	req, _ := http.NewRequest(http.MethodPost, url+"/api/graphql", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, out
}

const adminJobsQuery = `query($after: String) {
  jobs(statuses: [PENDING], first: 2, after: $after) {
    count
    pageInfo { hasNextPage endCursor }
    nodes { id status tags createdAt project { id fullPath } }
  }
}`

// TestGraphQLJobsIsAdminOnly: Query.jobs lists pending jobs, paged, for
// an administrator; a non-administrator gets an empty list as GitLab's
// Ci::JobsFinder answers; a token without api/read_api is refused; an
// unknown field fails validation.
func TestGraphQLJobsIsAdminOnly(t *testing.T) {
	s, srv, _ := newDouble(t)
	s.AddProject("acme/app")
	for range 3 {
		s.AddJob("acme/app", "j", []string{"linux"}, "true")
	}
	s.SetJobStatus(s.AddJob("acme/app", "done", nil), "success")

	code, out := postGraphQL(t, srv.URL, testToken, adminJobsQuery, nil)
	jobs, _ := out["data"].(map[string]any)["jobs"].(map[string]any)
	nodes, _ := jobs["nodes"].([]any)
	if code != 200 || len(nodes) != 2 || jobs["count"] != float64(3) {
		t.Fatalf("admin page 1: %d %v", code, out)
	}
	n := nodes[0].(map[string]any)
	if n["id"] != "gid://gitlab/Ci::Build/5" || n["status"] != "PENDING" || n["project"].(map[string]any)["fullPath"] != "acme/app" {
		t.Fatalf("node = %v (want the newest job first, global IDs, upper-case status)", n)
	}
	page := jobs["pageInfo"].(map[string]any)
	_, out = postGraphQL(t, srv.URL, testToken, adminJobsQuery, map[string]any{"after": page["endCursor"]})
	jobs = out["data"].(map[string]any)["jobs"].(map[string]any)
	if nodes, _ := jobs["nodes"].([]any); len(nodes) != 1 || jobs["pageInfo"].(map[string]any)["hasNextPage"] != false || page["hasNextPage"] != true {
		t.Fatalf("admin page 2: %v", out)
	}

	s.AddToken("glpat-user", Grant{Scopes: []string{"api"}, Role: Owner})
	code, out = postGraphQL(t, srv.URL, "glpat-user", adminJobsQuery, nil)
	jobs, _ = out["data"].(map[string]any)["jobs"].(map[string]any)
	if nodes, _ := jobs["nodes"].([]any); code != 200 || len(nodes) != 0 || out["errors"] != nil {
		t.Fatalf("non-admin: %d %v, want an empty list", code, out)
	}

	s.AddToken("glpat-runner-only", Grant{Scopes: []string{"create_runner"}, Admin: true})
	if code, _ := postGraphQL(t, srv.URL, "glpat-runner-only", adminJobsQuery, nil); code != http.StatusForbidden {
		t.Fatalf("token without api/read_api: %d", code)
	}
	if code, _ := postGraphQL(t, srv.URL, "", adminJobsQuery, nil); code != http.StatusUnauthorized {
		t.Fatalf("no token: %d", code)
	}
	_, out = postGraphQL(t, srv.URL, testToken, `{ jobs(statuses: [PENDING]) { nodes { runnerTags } } }`, nil)
	if errs, _ := out["errors"].([]any); len(errs) == 0 || !strings.Contains(errs[0].(map[string]any)["message"].(string), "runnerTags") {
		t.Fatalf("unknown field: %v", out)
	}
}
