package github

import (
	"net/http"
	"os"
	"testing"

	"github.com/nixos-fireactions/nixos-fireactions/internal/double/githubdouble/openapi"
)

// Every scope kind's paths are operations of GitHub's description (its
// runners listed, one read, JIT-registered and deleted; its App
// installation, where it has one), and a kind takes App tokens exactly
// where the description enables its runner operations for GitHub Apps.
func TestScopeKindsMatchGitHubsDescription(t *testing.T) {
	b, err := os.ReadFile("testdata/github-actions-runners.openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	spec, err := openapi.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	scopes := map[string]Scope{
		"org":        {Kind: "org", Org: "acme"},
		"repo":       {Kind: "repo", Owner: "acme", Repo: "widgets"},
		"enterprise": {Kind: "enterprise", Enterprise: "bigco"},
	}
	if len(scopes) != len(scopeKinds) {
		t.Fatalf("%d scope kinds, %d tested", len(scopeKinds), len(scopes))
	}
	for name, s := range scopes {
		k, err := kindOf(s)
		if err != nil {
			t.Fatal(err)
		}
		p := &Pool{scope: s, kind: k}
		for _, c := range []struct{ method, path string }{
			{http.MethodGet, p.runnersPath()},
			{http.MethodGet, p.runnersPath("42")},
			{http.MethodPost, p.runnersPath("generate-jitconfig")},
			{http.MethodDelete, p.runnersPath("42")},
		} {
			op, _ := spec.Find(c.method, "/"+c.path)
			if op == nil {
				t.Errorf("%s: %s /%s is no operation of GitHub's", name, c.method, c.path)
				continue
			}
			if op.EnabledForGitHubApps != k.appTokens {
				t.Errorf("%s: %s says enabledForGitHubApps %v, the kind appTokens %v", name, op.ID, op.EnabledForGitHubApps, k.appTokens)
			}
		}
		if inst := k.installation(s); inst != "" {
			if op, _ := spec.Find(http.MethodGet, "/"+inst); op == nil {
				t.Errorf("%s: GET /%s is no operation of GitHub's", name, inst)
			}
		} else if k.appTokens {
			t.Errorf("%s: takes App tokens but has no installation to find", name)
		}
		if got := s.String(); got != name+":"+k.name(s) {
			t.Errorf("%s: String() = %q", name, got)
		}
	}
	if _, err := kindOf(Scope{Kind: "org"}); err == nil {
		t.Error("an org scope without its org accepted")
	}
	if _, err := kindOf(Scope{Kind: "instance"}); err == nil {
		t.Error("an instance scope accepted")
	}
}
