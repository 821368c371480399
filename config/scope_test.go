package config

import (
	"strings"
	"testing"
)

func TestParseScope(t *testing.T) {
	tests := []struct {
		in   string
		want Scope
	}{
		{"instance", Scope{Kind: ScopeInstance}},
		{"org:acme", Scope{Kind: ScopeOrg, Org: "acme"}},
		{"org:my_org.io", Scope{Kind: ScopeOrg, Org: "my_org.io"}},
		{"org:group/subgroup", Scope{Kind: ScopeOrg, Org: "group/subgroup"}},
		{"repo:acme/widgets", Scope{Kind: ScopeRepo, Owner: "acme", Repo: "widgets"}},
		{"repo:group/sub/project", Scope{Kind: ScopeRepo, Owner: "group/sub", Repo: "project"}},
		{"enterprise:acme-corp", Scope{Kind: ScopeEnterprise, Enterprise: "acme-corp"}},
		{"group:acme", Scope{Kind: ScopeGroup, Group: "acme"}},
		{"group:acme/tools/ci", Scope{Kind: ScopeGroup, Group: "acme/tools/ci"}},
		{"project:acme/widgets", Scope{Kind: ScopeProject, Project: "acme/widgets"}},
		{"project:acme/tools/widgets.js", Scope{Kind: ScopeProject, Project: "acme/tools/widgets.js"}},
	}
	for _, tt := range tests {
		got, err := ParseScope(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("ParseScope(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
			continue
		}
		if s := got.String(); s != tt.in {
			t.Errorf("ParseScope(%q).String() = %q", tt.in, s)
		}
	}
}

func TestParseScopeRejects(t *testing.T) {
	for _, in := range []string{
		"", "instance:x", "Instance", "org", "org:", "org:a b", "org:a//b", "org:-x",
		"repo:", "repo:widgets", "repo:acme/", "repo:/widgets", "repo:acme/../x",
		"team:core", "user:alice",
		"enterprise", "enterprise:", "enterprise:acme/x", "enterprise:-x",
		"group", "group:", "group:a//b", "group:acme/", "Group:acme",
		"project", "project:", "project:widgets", "project:acme/", "project:/widgets", "project:acme//widgets",
	} {
		if s, err := ParseScope(in); err == nil {
			t.Errorf("ParseScope(%q) = %+v, want an error", in, s)
		}
	}
}

// Each forge type takes its own kinds of scope.
func TestCheckScope(t *testing.T) {
	tests := []struct {
		scope, forgeType string
		want             string // "" when accepted, else part of the error
	}{
		{"instance", "gitea", ""},
		{"org:acme", "gitea", ""},
		{"repo:acme/widgets", "gitea", ""},
		{"enterprise:acme", "gitea", `"enterprise:acme" is not a scope of a gitea forge (instance, org:NAME or repo:OWNER/NAME)`},
		{"group:acme", "gitea", "is not a scope of a gitea forge"},
		{"project:acme/widgets", "gitea", "is not a scope of a gitea forge"},

		{"instance", "github", `"instance" is not a scope of a github forge (org:NAME, repo:OWNER/NAME or enterprise:NAME)`},
		{"org:acme", "github", ""},
		{"repo:acme/widgets", "github", ""},
		{"enterprise:acme", "github", ""},
		{"group:acme", "github", "is not a scope of a github forge"},
		{"project:acme/widgets", "github", "is not a scope of a github forge"},

		{"instance", "gitlab", ""},
		{"org:acme", "gitlab", `"org:acme" is not a scope of a gitlab forge (instance, group:PATH or project:PATH)`},
		{"repo:acme/widgets", "gitlab", "is not a scope of a gitlab forge"},
		{"enterprise:acme", "gitlab", "is not a scope of a gitlab forge"},
		{"group:acme/tools", "gitlab", ""},
		{"project:acme/tools/widgets", "gitlab", ""},

		{"enterprise:acme", "", ""}, // unknown forge type: any kind
		{"team:core", "gitea", `"team:core" is not a scope`},
	}
	for _, tt := range tests {
		s, err := CheckScope(tt.scope, tt.forgeType)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("CheckScope(%q, %q) = %v, want no error", tt.scope, tt.forgeType, err)
		case tt.want == "" && s.String() != tt.scope:
			t.Errorf("CheckScope(%q, %q) = %+v", tt.scope, tt.forgeType, s)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("CheckScope(%q, %q) = %v, want an error containing %q", tt.scope, tt.forgeType, err, tt.want)
		}
	}
}
