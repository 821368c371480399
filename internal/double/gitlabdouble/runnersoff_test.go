package gitlabdouble

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"testing"

	gl "gitlab.com/gitlab-org/api/client-go/v2"
)

// TestProjectRunnerSettingsShownAsGitLabShowsThem holds the project
// entity to GitLab's API::Entities: shared_runners_enabled is in the full
// entity for anyone who can read the project, group_runners_enabled only
// for a user who may admin it (Maintainer and up), and neither is in a
// simple=true listing (BasicProjectDetails).
func TestProjectRunnerSettingsShownAsGitLabShowsThem(t *testing.T) {
	s, srv, _ := newDouble(t)
	s.AddProject("acme/app")
	s.TurnOffRunners("acme/app", true, true)
	s.AddToken("dev", Grant{Scopes: []string{"api"}, Role: Developer})
	s.AddToken("maint", Grant{Scopes: []string{"api"}, Role: Maintainer})
	list := func(token, query string) map[string]any {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/api/v4/groups/acme/projects"+query, nil)
		req.Header.Set("PRIVATE-TOKEN", token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var ps []map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&ps); err != nil || len(ps) != 1 {
			t.Fatalf("GET %s: %d, %v, %v", query, resp.StatusCode, ps, err)
		}
		return ps[0]
	}
	for _, tc := range []struct {
		token, query  string
		shared, group bool // shown
	}{
		{"maint", "?simple=true", false, false},
		{"dev", "", true, false},
		{"maint", "", true, true},
		{testToken, "", true, true},
	} {
		p := list(tc.token, tc.query)
		sh, hasShared := p["shared_runners_enabled"]
		gr, hasGroup := p["group_runners_enabled"]
		if hasShared != tc.shared || hasGroup != tc.group {
			t.Errorf("token %s %q: shared_runners_enabled shown %v, group_runners_enabled shown %v; want %v, %v", tc.token, tc.query, hasShared, hasGroup, tc.shared, tc.group)
		}
		if (hasShared && sh != false) || (hasGroup && gr != false) {
			t.Errorf("token %s: the settings turned off show %v, %v", tc.token, sh, gr)
		}
	}
}

// TestRunnersTurnedOffGetNoJobs: an instance runner gets no job of a
// project that turned instance runners off, a group runner none of one
// that turned group runners off; the other kind still does.
func TestRunnersTurnedOffGetNoJobs(t *testing.T) {
	s, srv, c := newDouble(t)
	s.AddProject("acme/app")
	gid := int64(0)
	for id, g := range s.groups {
		if g.FullPath == "acme" {
			gid = id
		}
	}
	runner := func(typ string) *RunnerClient {
		t.Helper()
		o := &gl.CreateUserRunnerOptions{RunnerType: gl.Ptr(typ), RunUntagged: gl.Ptr(true)}
		if typ == "group_type" {
			o.GroupID = gl.Ptr(gid)
		}
		r, _, err := c.Users.CreateUserRunner(o)
		if err != nil {
			t.Fatal(err)
		}
		return &RunnerClient{URL: srv.URL, Token: r.Token}
	}
	inst, grp := runner("instance_type"), runner("group_type")
	s.AddJob("acme/app", "a", nil, "true")
	s.TurnOffRunners("acme/app", true, false)
	if j, err := inst.RequestJob(context.Background(), nil); err != nil || j != nil {
		t.Fatalf("an instance runner got %v, %v from a project with instance runners off", j, err)
	}
	s.TurnOffRunners("acme/app", false, true)
	if j, err := grp.RequestJob(context.Background(), nil); err != nil || j != nil {
		t.Fatalf("a group runner got %v, %v from a project with group runners off", j, err)
	}
	if j, err := inst.RequestJob(context.Background(), nil); err != nil || j == nil {
		t.Fatalf("positive control: the instance runner got no job once instance runners were on: %v", err)
	}
}

// TestGroupProjectsWithShared: GET /groups/:id/projects lists the
// projects shared with the group unless with_shared=false (GitLab's
// default is true), and the group's own projects either way.
func TestGroupProjectsWithShared(t *testing.T) {
	s, srv, _ := newDouble(t)
	s.AddProject("acme/app")
	s.AddProject("other/tool")
	s.ShareProject("other/tool", "acme")
	for _, tc := range []struct {
		query string
		want  []string
	}{
		{"", []string{"acme/app", "other/tool"}},
		{"&with_shared=true", []string{"acme/app", "other/tool"}},
		{"&with_shared=false", []string{"acme/app"}},
	} {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/api/v4/groups/acme/projects?order_by=id&sort=asc"+tc.query, nil)
		req.Header.Set("PRIVATE-TOKEN", testToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var ps []struct {
			Path string `json:"path_with_namespace"`
		}
		err = json.NewDecoder(resp.Body).Decode(&ps)
		resp.Body.Close()
		var got []string
		for _, p := range ps {
			got = append(got, p.Path)
		}
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("GET /groups/acme/projects%s: %v, %v; want %v", tc.query, got, err, tc.want)
		}
	}
}
