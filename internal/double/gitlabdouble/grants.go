package gitlabdouble

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"slices"
	"strings"
)

// Role is a member's role in GitLab's projects and groups, in GitLab's
// order: each role may do what the roles below it may.
type Role int

// GitLab's roles (access levels 10 to 50).
const (
	NoAccess Role = iota
	Guest
	Reporter
	Developer
	Maintainer
	Owner
	// NoOne is above every role: a branch protected so that no one may
	// push or merge to it, administrators neither.
	NoOne
)

// Grant is what an access token may do: its scopes (api, read_api,
// create_runner, manage_runner, …) and its user's role in every project
// and group of the double (a project or group access token's bot user
// has the role it was created with); Admin for an administrator's token.
type Grant struct {
	Scopes []string
	Role   Role
	Admin  bool
}

// fullGrant is the token New is given: an administrator's personal
// access token with every scope the driver may use.
var fullGrant = Grant{Scopes: []string{"api", "create_runner", "manage_runner"}, Role: Owner, Admin: true}

// AddToken lets another access token in, with what it may do.
func (s *Server) AddToken(token string, g Grant) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.grants[token] = g
}

// grant returns the grant of the access token a request carries, sent as
// PRIVATE-TOKEN or as a bearer token, compared in constant time.
func (s *Server) grant(r *http.Request) (Grant, bool) {
	got := r.Header.Get("Private-Token")
	if got == "" {
		got = strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	}
	a := sha256.Sum256([]byte(got))
	s.mu.Lock()
	defer s.mu.Unlock()
	var found Grant
	ok := false
	for tok, g := range s.grants {
		b := sha256.Sum256([]byte(tok))
		if tok != "" && subtle.ConstantTimeCompare(a[:], b[:]) == 1 {
			found, ok = g, true
		}
	}
	return found, ok
}

// can reports whether the grant has one of the scopes.
func (g Grant) can(scopes ...string) bool {
	for _, sc := range scopes {
		if slices.Contains(g.Scopes, sc) {
			return true
		}
	}
	return false
}

// atLeast reports whether the grant's user has role r (an administrator
// has every role).
func (g Grant) atLeast(r Role) bool { return g.Admin || g.Role >= r }

// insufficientScope is GitLab's answer to a token without the scope an
// endpoint needs.
func insufficientScope(w http.ResponseWriter) {
	writeJSON(w, http.StatusForbidden, map[string]string{
		"error": "insufficient_scope", "error_description": "The request requires higher privileges than provided by the access token.",
	})
}

// currentUser is GET /user: GitLab shows is_admin (UserWithAdmin) only to
// an administrator; others get the public entity, without it.
func (s *Server) currentUser(w http.ResponseWriter, g Grant) {
	u := map[string]any{"id": 1, "username": "token-user", "name": "Token User", "state": "active"}
	if g.Admin {
		u["is_admin"] = true
	}
	writeJSON(w, http.StatusOK, u)
}

// mayManage reports whether the grant's user may create or delete a
// runner of type typ, as GitLab's runner API asks: an administrator for
// an instance runner, the Owner role for a group's, at least Maintainer
// for a project's. Another type is the handler's to refuse.
func (g Grant) mayManage(typ string) bool {
	switch typ {
	case "instance_type":
		return g.Admin
	case "group_type":
		return g.atLeast(Owner)
	case "project_type":
		return g.atLeast(Maintainer)
	}
	return true
}

// forbidden is the answer of GitLab's forbidden! helper (403), which
// its API gives wherever the double calls this.
func forbidden(w http.ResponseWriter) {
	writeJSON(w, http.StatusForbidden, map[string]string{"message": "403 Forbidden"})
}
