package gitlabdouble

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
)

// TestManagingARunnerNeedsItsRole holds runner creation and deletion by
// an access token to GitLab's prerequisites: an administrator for an
// instance runner, the group's Owner for a group runner, at least
// Maintainer of the project for a project runner (403 otherwise), the
// token's scope allowing.
func TestManagingARunnerNeedsItsRole(t *testing.T) {
	do, gid, pid := roleDouble(t)
	for _, tc := range []struct {
		body          map[string]any
		refused, lets string // tokens: one a role short, one with the role
	}{
		{map[string]any{"runner_type": "instance_type"}, "owner", testToken},
		{map[string]any{"runner_type": "group_type", "group_id": gid}, "maint", "owner"},
		{map[string]any{"runner_type": "project_type", "project_id": pid}, "dev", "maint"},
	} {
		typ := tc.body["runner_type"]
		if code, _ := do(http.MethodPost, tc.refused, "/user/runners", tc.body); code != http.StatusForbidden {
			t.Errorf("create %s with %s's token: %d, want 403", typ, tc.refused, code)
		}
		code, out := do(http.MethodPost, tc.lets, "/user/runners", tc.body)
		if code != http.StatusCreated {
			t.Fatalf("create %s with %s's token: %d %v, want 201", typ, tc.lets, code, out)
		}
		path := fmt.Sprintf("/runners/%v", out["id"])
		if code, _ := do(http.MethodDelete, tc.refused, path, nil); code != http.StatusForbidden {
			t.Errorf("delete %s with %s's token: %d, want 403", typ, tc.refused, code)
		}
		if code, _ := do(http.MethodDelete, tc.lets, path, nil); code != http.StatusNoContent {
			t.Errorf("delete %s with %s's token: %d, want 204", typ, tc.lets, code)
		}
	}
}

// TestListingRunnersNeedsItsRole holds runner listings by an access token
// to GitLab's API: all of the instance's (GET /runners/all) for an
// administrator only, a group's or a project's for at least its
// Maintainer (read_group_runners, read_project_runners); 403 otherwise,
// once the group or project is found.
func TestListingRunnersNeedsItsRole(t *testing.T) {
	do, gid, pid := roleDouble(t)
	for _, tc := range []struct {
		path          string
		refused, lets string // tokens: one a role short, one with the role
	}{
		{"/runners/all", "owner", testToken},
		{fmt.Sprintf("/groups/%d/runners", gid), "dev", "maint"},
		{fmt.Sprintf("/projects/%d/runners", pid), "dev", "maint"},
	} {
		if code, _ := do(http.MethodGet, tc.refused, tc.path, nil); code != http.StatusForbidden {
			t.Errorf("GET %s with %s's token: %d, want 403", tc.path, tc.refused, code)
		}
		if code, _ := do(http.MethodGet, tc.lets, tc.path, nil); code != http.StatusOK {
			t.Errorf("GET %s with %s's token: %d, want 200", tc.path, tc.lets, code)
		}
	}
	// The group or project is found first: one that does not exist is
	// 404 to anyone.
	for _, path := range []string{"/groups/nope/runners", "/projects/999/runners"} {
		if code, _ := do(http.MethodGet, "dev", path, nil); code != http.StatusNotFound {
			t.Errorf("GET %s with dev's token: %d, want 404", path, code)
		}
	}
}

// roleDouble is a double with the group acme, its project acme/app and
// three api tokens: its Owner's ("owner"), a Maintainer's ("maint") and a
// Developer's ("dev"), beside the administrator's (testToken). do sends
// a request with a token and a JSON body and answers its status and its
// decoded object, if it is one.
func roleDouble(t *testing.T) (do func(method, token, path string, body any) (int, map[string]any), gid, pid int64) {
	s, srv, _ := newDouble(t)
	gid, pid = s.AddGroup("acme"), s.AddProject("acme/app")
	for token, role := range map[string]Role{"owner": Owner, "maint": Maintainer, "dev": Developer} {
		s.AddToken(token, Grant{Scopes: []string{"api"}, Role: role})
	}
	return func(method, token, path string, body any) (int, map[string]any) {
		t.Helper()
		b, _ := json.Marshal(body)
		req, _ := http.NewRequest(method, srv.URL+"/api/v4"+path, bytes.NewReader(b))
		req.Header.Set("PRIVATE-TOKEN", token)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out
	}, gid, pid
}
