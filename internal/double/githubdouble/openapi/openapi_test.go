package openapi

import (
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"sort"
	"strings"
	"testing"
)

func loadGitHub(t *testing.T) *Description {
	t.Helper()
	data, err := os.ReadFile("../../../../forge/github/testdata/github-actions-runners.openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	d, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func value(t *testing.T, s string) any {
	t.Helper()
	var v any
	if err := decode([]byte(s), &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func TestFindPrefersLiteralSegments(t *testing.T) {
	d := loadGitHub(t)
	for path, want := range map[string]string{
		"/orgs/acme/actions/runners/downloads":          "actions/list-runner-applications-for-org",
		"/orgs/acme/actions/runners/42":                 "actions/get-self-hosted-runner-for-org",
		"/repos/o/r/actions/runners/generate-jitconfig": "actions/get-self-hosted-runner-for-repo", // CheckRequest refuses the id
		"/orgs/acme%2Fx/actions/runners":                "actions/list-self-hosted-runners-for-org",
	} {
		op, _ := d.Find("GET", path)
		got := ""
		if op != nil {
			got = op.ID
		}
		if got != want {
			t.Errorf("GET %s: %q, want %q", path, got, want)
		}
	}
	if op, vals := d.Find("POST", "/repos/o/r/actions/runners/generate-jitconfig"); op == nil || vals["owner"] != "o" || vals["repo"] != "r" {
		t.Fatalf("POST generate-jitconfig: %v %v", op, vals)
	}
}

func TestCheckRequest(t *testing.T) {
	d := loadGitHub(t)
	q := func(s string) url.Values { v, _ := url.ParseQuery(s); return v }
	const jit = "/orgs/acme/actions/runners/generate-jitconfig"
	for _, tc := range []struct {
		name, method, path, query, ctype, body, want string
	}{
		{"valid list", "GET", "/orgs/acme/actions/runners", "per_page=100&name=x", "", "", ""},
		{"unknown query parameter", "GET", "/orgs/acme/actions/runners", "status=online", "", "", "query parameter status is not in the description"},
		{"query not an integer", "GET", "/orgs/acme/actions/runners", "per_page=many", "", "", `per_page="many"`},
		{"enum query", "GET", "/repos/o/r/actions/runs", "status=sleeping", "", "", "is not one of"},
		{"path not an integer", "DELETE", "/orgs/acme/actions/runners/abc", "", "", "", "path parameter runner_id"},
		{"no such operation", "PATCH", "/orgs/acme/actions/runners", "", "", "", "no such operation"},
		{"valid body", "POST", jit, "", "application/json", `{"name":"r","runner_group_id":1,"labels":["a"],"work_folder":"_work"}`, ""},
		{"required body missing", "POST", jit, "", "", "", "request body is required"},
		{"body property missing", "POST", jit, "", "application/json", `{"name":"r","labels":["a"]}`, `required property "runner_group_id"`},
		{"body wrong type", "POST", jit, "", "application/json", `{"name":"r","runner_group_id":"1","labels":["a"]}`, "$.runner_group_id"},
		{"too few labels", "POST", jit, "", "application/json", `{"name":"r","runner_group_id":1,"labels":[]}`, "fewer than minItems"},
		{"null body", "POST", "/app/installations/1/access_tokens", "", "application/json", "null", "null where object is required"},
		{"body on a GET", "GET", "/orgs/acme/actions/runners", "", "application/json", `{}`, "takes no request body"},
		{"not JSON", "POST", jit, "", "application/json", `{`, "not JSON"},
	} {
		_, _, errs := d.CheckRequest(tc.method, tc.path, q(tc.query), tc.ctype, []byte(tc.body))
		got := fmt.Sprint(errs)
		if (tc.want == "") != (len(errs) == 0) || !strings.Contains(got, tc.want) {
			t.Errorf("%s: errors %v, want %q", tc.name, errs, tc.want)
		}
	}
}

func TestCheckResponse(t *testing.T) {
	d := loadGitHub(t)
	del, _ := d.Find("DELETE", "/orgs/acme/actions/runners/1")
	list, _ := d.Find("GET", "/orgs/acme/actions/runners")
	runner := `{"id":1,"name":"r","os":"linux","status":"online","busy":false,"labels":[{"name":"a","type":"custom"}]}`
	for _, tc := range []struct {
		name  string
		op    *Operation
		code  int
		ctype string
		body  string
		want  string
	}{
		{"204 empty", del, 204, "", "", ""},
		{"204 with a body", del, 204, "application/json", `{}`, "has no body"},
		{"generic 404", del, 404, "application/json", `{"message":"Not Found"}`, ""},
		{"generic without message", del, 503, "application/json", `{}`, `required property "message"`},
		{"undocumented status", del, 418, "application/json", `{"message":"teapot"}`, "not in the description"},
		{"valid list", list, 200, "application/json; charset=utf-8", `{"total_count":1,"runners":[` + runner + `]}`, ""},
		{"enum violated", list, 200, "application/json", `{"total_count":1,"runners":[` + strings.Replace(runner, "custom", "mine", 1) + `]}`, "is not one of"},
		{"wrong content type", list, 200, "text/plain", `{}`, "content type"},
		{"missing field", list, 200, "application/json", `{"runners":[]}`, `"total_count"`},
	} {
		errs := tc.op.CheckResponse(tc.code, tc.ctype, []byte(tc.body))
		got := fmt.Sprint(errs)
		if (tc.want == "") != (len(errs) == 0) || !strings.Contains(got, tc.want) {
			t.Errorf("%s: errors %v, want %q", tc.name, errs, tc.want)
		}
	}
}

func TestValidateKeywords(t *testing.T) {
	s := func(js string) map[string]any {
		var m map[string]any
		if err := json.Unmarshal([]byte(js), &m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	for _, tc := range []struct {
		schema, value string
		ok            bool
	}{
		{`{"type":"string","nullable":true}`, `null`, true},
		{`{"type":"string"}`, `null`, false},
		{`{"type":"integer"}`, `1.5`, false},
		{`{"type":"integer"}`, `12345678901`, true},
		{`{"type":"number"}`, `1.5`, true},
		{`{"type":"string","format":"date-time"}`, `"2021-06-15T19:22:27Z"`, true},
		{`{"type":"string","format":"date-time"}`, `"yesterday"`, false},
		{`{"type":"string","format":"uri"}`, `"relative/path"`, false},
		{`{"type":"string","format":"email"}`, `"octocat@github.com"`, true},
		{`{"type":"string","enum":["a",null]}`, `null`, true},
		{`{"type":"object","additionalProperties":false,"properties":{"a":{}}}`, `{"b":1}`, false},
		{`{"type":"object","additionalProperties":{"type":"string"}}`, `{"b":1}`, false},
		{`{"allOf":[{"required":["a"]},{"required":["b"]}]}`, `{"a":1}`, false},
		{`{"anyOf":[{"type":"string"},{"type":"integer"}]}`, `true`, false},
		{`{"anyOf":[{"type":"string"},{"type":"integer"}]}`, `3`, true},
		{`{"oneOf":[{"type":"integer"},{"type":"number"}]}`, `3`, false},
		{`{"oneOf":[{"type":"integer"},{"type":"string"}]}`, `3`, true},
		{`{"type":"array","maxItems":1,"items":{"type":"string"}}`, `["a","b"]`, false},
		{`{"type":"array","items":{"type":"string"}}`, `["a",2]`, false},
	} {
		errs := Validate(s(tc.schema), value(t, tc.value))
		if (len(errs) == 0) != tc.ok {
			t.Errorf("%s against %s: %v, want ok=%v", tc.value, tc.schema, errs, tc.ok)
		}
	}
}

// GitHub's own examples conform to its schemas but for three known
// slips, which the validator finds: the check is not vacuous.
func TestGitHubExamplesAgainstTheirSchemas(t *testing.T) {
	d := loadGitHub(t)
	checked := 0
	var slips []string
	for _, op := range d.Operations() {
		for _, code := range []int{200, 201} {
			ex := op.Example(code)
			if ex == nil {
				continue
			}
			checked++
			if errs := Validate(op.ResponseSchema(code), ex); len(errs) > 0 {
				slips = append(slips, op.ID)
			}
		}
	}
	sort.Strings(slips)
	want := "actions/get-job-for-workflow-run actions/list-jobs-for-workflow-run apps/list-installations"
	if got := strings.Join(slips, " "); got != want || checked < 30 {
		t.Fatalf("checked %d examples; slips %q, want %q", checked, got, want)
	}
}

// Examples come from example, else from the examples entry named
// default; each call returns a copy of its own, so a double that fills
// an example in for one answer does not change the next.
func TestExamplesAreFreshCopies(t *testing.T) {
	d, err := Parse([]byte(`{"openapi":"3.0.3","paths":{"/things":{"post":{
		"operationId":"things/create",
		"requestBody":{"content":{"application/json":{"examples":{"other":{"value":{"n":0}},"default":{"value":{"n":1}}}}}},
		"responses":{
			"201":{"content":{"application/json":{"example":{"n":2},"examples":{"default":{"value":{"n":3}}}}}},
			"204":{"description":"no body"}}}}}}`))
	if err != nil {
		t.Fatal(err)
	}
	op, _ := d.Find("POST", "/things")
	if op == nil {
		t.Fatal("POST /things not found")
	}
	for _, tc := range []struct {
		what string
		get  func() any
		want float64
	}{
		{"request body (examples.default)", op.RequestExample, 1},
		{"201 response (example wins over examples)", func() any { return op.Example(201) }, 2},
	} {
		first, ok := tc.get().(map[string]any)
		if !ok || fmt.Sprint(first["n"]) != fmt.Sprint(tc.want) {
			t.Fatalf("%s: %#v, want n=%v", tc.what, tc.get(), tc.want)
		}
		first["n"] = "changed"
		if again := tc.get().(map[string]any); fmt.Sprint(again["n"]) != fmt.Sprint(tc.want) {
			t.Errorf("%s: a change to one copy reached the next: %#v", tc.what, again)
		}
	}
	if ex := op.Example(204); ex != nil {
		t.Errorf("204 has no JSON example, got %#v", ex)
	}
}
