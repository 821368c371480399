package forgejodouble

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
)

// spec is the swagger subset in testdata.
type spec struct {
	Paths       map[string]map[string]json.RawMessage `json:"paths"`
	Definitions map[string]struct {
		Properties map[string]json.RawMessage `json:"properties"`
	} `json:"definitions"`
}

func loadSpec(t *testing.T) spec {
	t.Helper()
	b, err := os.ReadFile("testdata/swagger-runners.json")
	if err != nil {
		t.Fatal(err)
	}
	var s spec
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	return s
}

const admin, orgOwner, noScope, readOnlyRepo = "ADMIN", "ORGOWNER", "NOSCOPE", "REPOREAD"

func newServer(t *testing.T, legacy bool) (*Double, *httptest.Server) {
	tokens := map[string]Token{
		admin:        {Scopes: []string{"write:admin", "write:organization", "write:repository"}, SiteAdmin: true},
		orgOwner:     {Scopes: []string{"read:organization", "write:organization"}, OrgOwner: []string{"acme"}},
		noScope:      {Scopes: []string{"read:user"}, SiteAdmin: true},
		readOnlyRepo: {Scopes: []string{"read:repository"}, RepoOwner: []string{"acme/app"}},
	}
	d := New(tokens)
	if legacy {
		d = NewV12(tokens)
	}
	d.AddOrgs("other")
	srv := httptest.NewServer(d.Handler())
	t.Cleanup(srv.Close)
	return d, srv
}

func call(t *testing.T, srv *httptest.Server, method, path, token string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, srv.URL+path, nil)
	if token != "" {
		req.Header.Set("Authorization", "token "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// Every operation the double serves is in Forgejo's swagger, with that
// method.
func TestRoutesInSwagger(t *testing.T) {
	s := loadSpec(t)
	for _, r := range routes {
		ops, ok := s.Paths[r.swagger]
		if !ok {
			t.Errorf("%s %s: path not in Forgejo's swagger", r.method, r.swagger)
			continue
		}
		if _, ok := ops[strings.ToLower(r.method)]; !ok {
			t.Errorf("%s %s: method not in Forgejo's swagger", r.method, r.swagger)
		}
	}
	if _, ok := s.Paths["/version"]["get"]; !ok {
		t.Error("/version not in the swagger")
	}
}

// keysIn fails for a JSON key of obj that the swagger definition lacks.
func keysIn(t *testing.T, s spec, def string, obj map[string]any) {
	t.Helper()
	props := s.Definitions[def].Properties
	if len(props) == 0 {
		t.Fatalf("definition %s missing from the swagger subset", def)
	}
	for k := range obj {
		if _, ok := props[k]; !ok {
			t.Errorf("%s: key %q is not in Forgejo's definition", def, k)
		}
	}
}

// The answers have the swagger's shapes: an object with token, plain
// arrays of ActionRunJob and ActionRunner, an Organization, a Repository.
func TestAnswersMatchSwagger(t *testing.T) {
	s := loadSpec(t)
	d, srv := newServer(t, false)
	d.SetJobs(Job{ID: 7, RepoID: 3, Owner: "acme", Repo: "acme/app", Name: "build", RunsOn: []string{"linux"}, Status: "waiting"})

	code, b := call(t, srv, "GET", "/api/v1/orgs/acme/actions/runners/registration-token", orgOwner)
	var tok map[string]any
	if code != 200 || json.Unmarshal(b, &tok) != nil || tok["token"] == "" {
		t.Fatalf("registration token: %d %s", code, b)
	}
	keysIn(t, s, "RegistrationToken", tok)

	code, b = call(t, srv, "GET", "/api/v1/orgs/acme/actions/runners/jobs?labels=linux", orgOwner)
	var jobs []map[string]any
	if code != 200 || json.Unmarshal(b, &jobs) != nil || len(jobs) != 1 {
		t.Fatalf("jobs: %d %s", code, b)
	}
	keysIn(t, s, "ActionRunJob", jobs[0])

	mustRegister(t, d, tok["token"].(string), "r1")
	code, b = call(t, srv, "GET", "/api/v1/orgs/acme/actions/runners", orgOwner)
	var runners []map[string]any
	if code != 200 || json.Unmarshal(b, &runners) != nil || len(runners) != 1 {
		t.Fatalf("runners: %d %s", code, b)
	}
	keysIn(t, s, "ActionRunner", runners[0])

	code, b = call(t, srv, "GET", "/api/forgejo/v1/version", "")
	var v map[string]any
	if code != 200 || json.Unmarshal(b, &v) != nil || v["version"] != Version {
		t.Fatalf("forgejo version: %d %s", code, b)
	}
	keysIn(t, s, "ServerVersion", v)

	for path, def := range map[string]string{"/api/v1/orgs/acme": "Organization", "/api/v1/repos/acme/app": "Repository"} {
		code, b = call(t, srv, "GET", path, admin)
		var got map[string]any
		if code != 200 || json.Unmarshal(b, &got) != nil || len(got) == 0 {
			t.Fatalf("GET %s: %d %s", path, code, b)
		}
		keysIn(t, s, def, got)
	}
}

// Forgejo's job search answers waiting and running jobs whose runs-on
// labels are all among those asked, and only the scope's.
func TestJobSearch(t *testing.T) {
	d, srv := newServer(t, false)
	d.SetJobs(
		Job{ID: 1, Owner: "acme", Repo: "acme/app", RunsOn: []string{"linux"}, Status: "waiting"},
		Job{ID: 2, Owner: "acme", Repo: "acme/app", RunsOn: []string{"linux", "gpu"}, Status: "waiting"},
		Job{ID: 3, Owner: "acme", Repo: "acme/app", RunsOn: []string{"linux"}, Status: "success"},
		Job{ID: 4, Owner: "other", Repo: "other/x", RunsOn: []string{"linux"}, Status: "running"},
	)
	ids := func(path string) []float64 {
		code, b := call(t, srv, "GET", path, admin)
		var jobs []map[string]any
		if code != 200 || json.Unmarshal(b, &jobs) != nil {
			t.Fatalf("%s: %d %s", path, code, b)
		}
		var out []float64
		for _, j := range jobs {
			out = append(out, j["id"].(float64))
		}
		return out
	}
	if got := ids("/api/v1/orgs/acme/actions/runners/jobs?labels=linux"); len(got) != 1 || got[0] != 1 {
		t.Errorf("org acme, linux: %v, want [1]", got)
	}
	if got := ids("/api/v1/admin/runners/jobs?labels=linux,gpu"); len(got) != 3 {
		t.Errorf("instance, linux+gpu: %v, want [1 2 4]", got)
	}
	if got := ids("/api/v1/repos/acme/app/actions/runners/jobs"); len(got) != 0 {
		t.Errorf("no labels asked: %v, want none", got)
	}
}

// What Forgejo refuses, the double refuses; positive controls alongside.
func TestRefusals(t *testing.T) {
	_, srv := newServer(t, false)
	tests := []struct {
		name, method, path, token string
		want                      int
	}{
		{"no token", "GET", "/api/v1/admin/runners/registration-token", "", 401},
		{"unknown token", "GET", "/api/v1/admin/runners/registration-token", "NOPE", 401},
		{"admin path without read:admin", "GET", "/api/v1/admin/runners/registration-token", noScope, 403},
		{"admin path, not site admin", "GET", "/api/v1/admin/runners/registration-token", orgOwner, 403},
		{"another org", "GET", "/api/v1/orgs/other/actions/runners/registration-token", orgOwner, 403},
		{"an org that does not exist", "GET", "/api/v1/orgs/ghost/actions/runners", admin, 404},
		{"a repo that does not exist", "GET", "/api/v1/repos/acme/gone/actions/runners", admin, 404},
		{"the org is looked up before the token is required", "GET", "/api/v1/orgs/ghost/actions/runners", "", 404},
		{"an existing org still needs a token", "GET", "/api/v1/orgs/acme/actions/runners", "", 401},
		{"the token's scope is checked before the org", "GET", "/api/v1/orgs/ghost/actions/runners", readOnlyRepo, 403},
		{"reading an org needs read:organization", "GET", "/api/v1/orgs/acme", readOnlyRepo, 403},
		{"token is a GET, not POST", "POST", "/api/v1/orgs/acme/actions/runners/registration-token", orgOwner, 405},
		{"no /actions/jobs?status=queued", "GET", "/api/v1/orgs/acme/actions/jobs?status=queued", orgOwner, 404},
		{"delete needs write:repository", "DELETE", "/api/v1/repos/acme/app/actions/runners/1", readOnlyRepo, 403},
		{"control: admin token", "GET", "/api/v1/admin/runners/registration-token", admin, 200},
		{"control: admin token, new path", "GET", "/api/v1/admin/actions/runners/registration-token", admin, 200},
		{"control: org owner", "GET", "/api/v1/orgs/acme/actions/runners/registration-token", orgOwner, 200},
		{"control: repo owner reads", "GET", "/api/v1/repos/acme/app/actions/runners/jobs?labels=x", readOnlyRepo, 200},
		{"control: an existing org's runners", "GET", "/api/v1/orgs/acme/actions/runners", admin, 200},
		{"control: an existing repo's runners", "GET", "/api/v1/repos/acme/app/actions/runners", admin, 200},
		{"control: anyone signed in reads a public org", "GET", "/api/v1/orgs/other", orgOwner, 200},
		{"control: a repo", "GET", "/api/v1/repos/acme/app", admin, 200},
		{"control: a public org needs no token", "GET", "/api/v1/orgs/acme", "", 200},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if code, b := call(t, srv, tc.method, tc.path, tc.token); code != tc.want {
				t.Fatalf("%s %s: %d %s, want %d", tc.method, tc.path, code, b, tc.want)
			}
		})
	}
}

// Forgejo v12 has no runner list or delete, and the instance's token and
// jobs only under /admin/runners.
func TestV12(t *testing.T) {
	_, srv := newServer(t, true)
	for path, want := range map[string]int{
		"/api/v1/admin/runners/registration-token":         200,
		"/api/v1/admin/actions/runners/registration-token": 404,
		"/api/v1/orgs/acme/actions/runners":                404,
		"/api/v1/orgs/acme/actions/runners/jobs?labels=a":  200,
	} {
		if code, b := call(t, srv, "GET", path, admin); code != want {
			t.Errorf("GET %s: %d %s, want %d", path, code, b, want)
		}
	}
}

// Runners are deleted only through their own scope (Forgejo's Editable);
// the instance deletes any.
func TestDeleteScoped(t *testing.T) {
	d, srv := newServer(t, false)
	_, b := call(t, srv, "GET", "/api/v1/orgs/acme/actions/runners/registration-token", orgOwner)
	var tok map[string]string
	json.Unmarshal(b, &tok)
	id := mustRegister(t, d, tok["token"], "r1")
	if code, _ := call(t, srv, "DELETE", "/api/v1/repos/acme/app/actions/runners/"+id, admin); code != 404 {
		t.Fatalf("a repo deleted an org's runner: %d", code)
	}
	if code, _ := call(t, srv, "DELETE", "/api/v1/orgs/acme/actions/runners/"+id, orgOwner); code != 204 {
		t.Fatalf("the org could not delete its runner: %d", code)
	}
	if len(d.Runners()) != 0 {
		t.Fatal("runner still there")
	}
}
