package config

import (
	"fmt"
	"regexp"
	"strings"
)

// Scope is where a pool's runners register, parsed from Pool.Scope.
type Scope struct {
	// Kind is "instance", "org", "repo", "enterprise", "group" or
	// "project".
	Kind string
	// Org is the organisation of an "org" scope.
	Org string
	// Owner and Repo name the repository of a "repo" scope.
	Owner, Repo string
	// Enterprise is the (GitHub) enterprise slug of an "enterprise" scope.
	Enterprise string
	// Group is the full path of the (GitLab) group of a "group" scope,
	// such as "group/subgroup".
	Group string
	// Project is the full path of the (GitLab) project of a "project"
	// scope, such as "group/subgroup/project".
	Project string
}

// Scope kinds.
const (
	ScopeInstance   = "instance"
	ScopeOrg        = "org"
	ScopeRepo       = "repo"
	ScopeEnterprise = "enterprise"
	ScopeGroup      = "group"
	ScopeProject    = "project"
)

// scopeName is one segment of an organisation, owner or repository name.
var scopeName = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]*$`)

// ParseScope parses "instance", "org:NAME", "repo:OWNER/NAME",
// "enterprise:NAME", "group:PATH" or "project:PATH". Names are letters,
// digits, '_', '.' and '-'. An organisation, owner, group or project path
// may be nested ("group/sub", as GitLab has); a repository's name is what
// follows its last '/', and a project path has at least two segments
// (OWNER/NAME). An enterprise name is a single segment. ParseScope does not
// know which forge a scope is for; ScopeKinds says which kinds each forge
// type takes.
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
	case kind == ScopeEnterprise && hasArg:
		if !scopeName.MatchString(rest) {
			return Scope{}, fmt.Errorf("%q does not name an enterprise (enterprise:NAME)", s)
		}
		return Scope{Kind: ScopeEnterprise, Enterprise: rest}, nil
	case kind == ScopeGroup && hasArg:
		if !validPath(rest) {
			return Scope{}, fmt.Errorf("%q does not name a group (group:PATH, such as group:team/sub)", s)
		}
		return Scope{Kind: ScopeGroup, Group: rest}, nil
	case kind == ScopeProject && hasArg:
		if !strings.Contains(rest, "/") || !validPath(rest) {
			return Scope{}, fmt.Errorf("%q does not name a project (project:OWNER/NAME or project:GROUP/SUB/NAME)", s)
		}
		return Scope{Kind: ScopeProject, Project: rest}, nil
	}
	return Scope{}, fmt.Errorf("%q is not a scope: want instance, org:NAME, repo:OWNER/NAME, enterprise:NAME, group:PATH or project:PATH", s)
}

// String is the scope as ParseScope reads it.
func (s Scope) String() string {
	switch s.Kind {
	case ScopeOrg:
		return ScopeOrg + ":" + s.Org
	case ScopeRepo:
		return ScopeRepo + ":" + s.Owner + "/" + s.Repo
	case ScopeEnterprise:
		return ScopeEnterprise + ":" + s.Enterprise
	case ScopeGroup:
		return ScopeGroup + ":" + s.Group
	case ScopeProject:
		return ScopeProject + ":" + s.Project
	}
	return s.Kind
}

// ScopeKinds lists the scope kinds runners of a forge type can register
// at, or nil for an unknown type.
func ScopeKinds(forgeType string) []string {
	switch forgeType {
	case "gitea":
		return []string{ScopeInstance, ScopeOrg, ScopeRepo}
	case "github":
		return []string{ScopeOrg, ScopeRepo, ScopeEnterprise}
	case "gitlab":
		return []string{ScopeInstance, ScopeGroup, ScopeProject}
	}
	return nil
}

// scopeForms is how each kind is written, for messages.
var scopeForms = map[string]string{
	ScopeInstance:   ScopeInstance,
	ScopeOrg:        "org:NAME",
	ScopeRepo:       "repo:OWNER/NAME",
	ScopeEnterprise: "enterprise:NAME",
	ScopeGroup:      "group:PATH",
	ScopeProject:    "project:PATH",
}

// CheckScope parses s and checks that a forge of type forgeType has
// runners at that kind of scope. An unknown forge type accepts any scope.
func CheckScope(s, forgeType string) (Scope, error) {
	sc, err := ParseScope(s)
	if err != nil {
		return sc, err
	}
	kinds := ScopeKinds(forgeType)
	if kinds == nil {
		return sc, nil
	}
	forms := make([]string, len(kinds))
	for i, k := range kinds {
		if k == sc.Kind {
			return sc, nil
		}
		forms[i] = scopeForms[k]
	}
	return Scope{}, fmt.Errorf("%q is not a scope of a %s forge (%s or %s)",
		s, forgeType, strings.Join(forms[:len(forms)-1], ", "), forms[len(forms)-1])
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
