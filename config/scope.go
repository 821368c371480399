package config

import (
	"fmt"
	"regexp"
	"strings"
)

// Scope is where a pool's runners register, parsed from Pool.Scope.
type Scope struct {
	// Kind is "instance", "org" or "repo".
	Kind string
	// Org is the organisation of an "org" scope.
	Org string
	// Owner and Repo name the repository of a "repo" scope.
	Owner, Repo string
}

// Scope kinds.
const (
	ScopeInstance = "instance"
	ScopeOrg      = "org"
	ScopeRepo     = "repo"
)

// scopeName is one segment of an organisation, owner or repository name.
var scopeName = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]*$`)

// ParseScope parses "instance", "org:NAME" or "repo:OWNER/NAME". Names are
// letters, digits, '_', '.' and '-'. An organisation or owner may be a
// nested group path ("group/sub", as GitLab has); a repository's name is
// what follows its last '/'.
func ParseScope(s string) (Scope, error) {
	kind, rest, hasArg := strings.Cut(s, ":")
	switch {
	case kind == ScopeInstance && !hasArg:
		return Scope{Kind: ScopeInstance}, nil
	case kind == ScopeOrg && hasArg:
		if !validPath(rest) {
			return Scope{}, fmt.Errorf("%q does not name an organisation (org:NAME)", s)
		}
		return Scope{Kind: ScopeOrg, Org: rest}, nil
	case kind == ScopeRepo && hasArg:
		i := strings.LastIndex(rest, "/")
		if i < 0 || !validPath(rest[:i]) || !validPath(rest[i+1:]) {
			return Scope{}, fmt.Errorf("%q does not name a repository (repo:OWNER/NAME)", s)
		}
		return Scope{Kind: ScopeRepo, Owner: rest[:i], Repo: rest[i+1:]}, nil
	}
	return Scope{}, fmt.Errorf("%q is not a scope: want instance, org:NAME or repo:OWNER/NAME", s)
}

// String is the scope as ParseScope reads it.
func (s Scope) String() string {
	switch s.Kind {
	case ScopeOrg:
		return ScopeOrg + ":" + s.Org
	case ScopeRepo:
		return ScopeRepo + ":" + s.Owner + "/" + s.Repo
	}
	return s.Kind
}

// validPath reports whether p is one or more '/'-separated valid names.
func validPath(p string) bool {
	for seg := range strings.SplitSeq(p, "/") {
		if !scopeName.MatchString(seg) {
			return false
		}
	}
	return true
}
