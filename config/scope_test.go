package config

import "testing"

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
	} {
		if s, err := ParseScope(in); err == nil {
			t.Errorf("ParseScope(%q) = %+v, want an error", in, s)
		}
	}
}
