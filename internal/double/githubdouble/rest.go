package githubdouble

import (
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"
)

// handler serves one operation; callers hold d.mu. A nil body is an
// answer without one.
type handler func(d *Double, c *call) (int, any)

// handlers serve the description's operations by operation id. The
// runner operations are the same at org, repo and enterprise scope.
var handlers = map[string]handler{
	"apps/get-authenticated":                     getApp,
	"apps/list-installations":                    listInstallations,
	"apps/create-installation-access-token":      createToken,
	"apps/get-org-installation":                  findInstallation("Organization"),
	"apps/get-user-installation":                 findInstallation("User"),
	"apps/get-repo-installation":                 findRepoInstallation,
	"apps/list-repos-accessible-to-installation": listInstallationRepos,

	"actions/cancel-workflow-run":       cancelRun,
	"actions/force-cancel-workflow-run": forceCancelRun,

	"actions/list-self-hosted-runner-groups-for-org":  managesRunners("read", listGroups),
	"actions/create-self-hosted-runner-group-for-org": managesRunners("write", createGroup),

	"actions/list-workflow-runs-for-repo":                            listRuns,
	"actions/list-jobs-for-workflow-run":                             listJobs,
	"actions/get-job-for-workflow-run":                               getJob,
	"enterprise-admin/get-runner-version-deprecation-for-enterprise": exampleOf("enterprise-admin/get-runner-version-deprecation-for-enterprise"),
}

func init() {
	for _, scope := range []struct{ kind, org, ent string }{
		{"org", "actions/%s-for-org", "actions/%s-from-org"},
		{"repo", "actions/%s-for-repo", "actions/%s-from-repo"},
		{"enterprise", "enterprise-admin/%s-for-enterprise", "enterprise-admin/%s-from-enterprise"},
	} {
		f, from := scope.org, scope.ent
		handlers[fmt.Sprintf(f, "list-self-hosted-runners")] = managesRunners("read", listRunners)
		handlers[fmt.Sprintf(f, "list-runner-applications")] = managesRunners("read", exampleOf(fmt.Sprintf(f, "list-runner-applications")))
		handlers[fmt.Sprintf(f, "create-registration-token")] = managesRunners("write", registrationToken)
		handlers[fmt.Sprintf(f, "create-remove-token")] = managesRunners("write", removeToken)
		handlers[fmt.Sprintf(f, "get-self-hosted-runner")] = managesRunners("read", getRunner)
		handlers[fmt.Sprintf(from, "delete-self-hosted-runner")] = managesRunners("write", deleteRunner)
		handlers[fmt.Sprintf(f, "list-labels-for-self-hosted-runner")] = managesRunners("read", labels("list"))
		handlers[fmt.Sprintf(f, "add-custom-labels-to-self-hosted-runner")] = managesRunners("write", labels("add"))
		handlers[fmt.Sprintf(f, "set-custom-labels-for-self-hosted-runner")] = managesRunners("write", labels("set"))
		handlers[fmt.Sprintf(f, "generate-runner-jitconfig")] = managesRunners("write", generateJIT)
	}
	// GitHub's ids for these are irregular.
	handlers["actions/generate-runner-jitconfig-for-enterprise"] = managesRunners("write", generateJIT)
	handlers["enterprise-admin/remove-all-custom-labels-from-self-hosted-runner-for-enterprise"] = managesRunners("write", labels("clear"))
	handlers["enterprise-admin/remove-custom-label-from-self-hosted-runner-for-enterprise"] = managesRunners("write", labels("remove"))
	handlers["actions/remove-all-custom-labels-from-self-hosted-runner-for-org"] = managesRunners("write", labels("clear"))
	handlers["actions/remove-custom-label-from-self-hosted-runner-for-org"] = managesRunners("write", labels("remove"))
	handlers["actions/remove-all-custom-labels-from-self-hosted-runner-for-repo"] = managesRunners("write", labels("clear"))
	handlers["actions/remove-custom-label-from-self-hosted-runner-for-repo"] = managesRunners("write", labels("remove"))
}

// managesRunners is h behind what GitHub asks of a caller managing a
// scope's runners (its descriptions of each runner operation): a scope
// the credential covers, and then, of a PAT (classic), admin:org for an
// organization's runners, repo for a repository's and
// manage_runners:enterprise for an enterprise's; of an installation
// token, organization_self_hosted_runners or administration at level
// ("read" or "write"; an enterprise's runners take no GitHub App).
func managesRunners(level string, h handler) handler {
	return func(d *Double, c *call) (int, any) {
		s, _ := c.scope()
		if !c.covers(s) {
			return http.StatusForbidden, basicError("Resource not accessible by integration")
		}
		permission, scope := "administration", "repo"
		switch s.kind {
		case "org":
			permission, scope = "organization_self_hosted_runners", "admin:org"
		case "enterprise":
			permission, scope = "", "manage_runners:enterprise"
		}
		if status, body := c.may(permission, level, scope); status != 0 {
			return status, body
		}
		return h(d, c)
	}
}

// HasHandler reports whether the double serves an operation.
func HasHandler(opID string) bool { _, ok := handlers[opID]; return ok }

var notFound = basicError("Not Found")

func exampleOf(opID string) handler {
	return func(d *Double, c *call) (int, any) {
		if s, ok := c.scope(); ok && !c.covers(s) {
			return http.StatusForbidden, basicError("Resource not accessible by integration")
		}
		return http.StatusOK, d.exampleValue(opID, 200)
	}
}

// scope is the runner scope the path names.
func (c *call) scope() (scopeKey, bool) {
	switch {
	case c.path["enterprise"] != "":
		return scopeKey{"enterprise", strings.ToLower(c.path["enterprise"])}, true
	case c.path["org"] != "":
		return scopeKey{"org", strings.ToLower(c.path["org"])}, true
	case c.path["owner"] != "":
		return scopeKey{"repo", strings.ToLower(c.path["owner"] + "/" + c.path["repo"])}, true
	}
	return scopeKey{}, false
}

func (c *call) intPath(name string) int64 {
	n, _ := strconv.ParseInt(c.path[name], 10, 64)
	return n
}

// page cuts a list by per_page (default 30, at most 100) and page, and
// sets the Link header.
func (c *call) page(items []any) []any {
	per, page := 30, 1
	if v, err := strconv.Atoi(first(c.query["per_page"])); err == nil && v > 0 {
		per = min(v, 100)
	}
	if v, err := strconv.Atoi(first(c.query["page"])); err == nil && v > 0 {
		page = v
	}
	last := max(1, (len(items)+per-1)/per)
	if page < last {
		u := *c.r.URL
		q := u.Query()
		q.Set("page", strconv.Itoa(page+1))
		u.RawQuery = q.Encode()
		next := "https://api.github.com" + u.Path + "?" + u.RawQuery
		q.Set("page", strconv.Itoa(last))
		u.RawQuery = q.Encode()
		c.header.Set("Link", fmt.Sprintf(`<%s>; rel="next", <https://api.github.com%s?%s>; rel="last"`, next, u.Path, u.RawQuery))
	}
	lo := min((page-1)*per, len(items))
	return items[lo:min(lo+per, len(items))]
}

func first(vs []string) string {
	if len(vs) == 0 {
		return ""
	}
	return vs[0]
}

func getApp(d *Double, c *call) (int, any) {
	m := d.example("apps/get-authenticated", 200)
	m["id"] = d.o.AppID
	return http.StatusOK, m
}

func (d *Double) liveInstallations() []*installation {
	var out []*installation
	for _, in := range d.installations {
		if !in.gone {
			out = append(out, in)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].id < out[j].id })
	return out
}

func listInstallations(d *Double, c *call) (int, any) {
	var items []any
	for _, in := range d.liveInstallations() {
		items = append(items, d.installationJSON(in))
	}
	return http.StatusOK, nonNil(c.page(items))
}

func nonNil(items []any) []any {
	if items == nil {
		return []any{}
	}
	return items
}

func createToken(d *Double, c *call) (int, any) {
	in := d.installations[c.intPath("installation_id")]
	if in == nil || in.gone {
		return http.StatusNotFound, notFound
	}
	perms, ok := tokenPermissions(in.perms, c.body["permissions"])
	if !ok {
		return http.StatusUnprocessableEntity, basicError("The permissions requested are not granted to this installation.")
	}
	t := &token{value: "ghs_" + randomHex(18), inst: in.id, expires: time.Now().Add(d.o.TokenTTL), perms: perms}
	d.tokens[t.value] = t
	granted := map[string]any{}
	for k, v := range perms {
		granted[k] = v
	}
	return http.StatusCreated, map[string]any{
		"token": t.value, "expires_at": stamp(t.expires), "permissions": granted,
		"repository_selection": "all",
	}
}

func findInstallation(targetType string) handler {
	return func(d *Double, c *call) (int, any) {
		name := c.path["org"]
		if name == "" {
			name = c.path["username"]
		}
		for _, in := range d.liveInstallations() {
			if in.targetType == targetType && strings.EqualFold(in.account, name) {
				return http.StatusOK, d.installationJSON(in)
			}
		}
		return http.StatusNotFound, notFound
	}
}

func findRepoInstallation(d *Double, c *call) (int, any) {
	s, _ := c.scope()
	for _, in := range d.liveInstallations() {
		if (&call{inst: in}).covers(s) {
			return http.StatusOK, d.installationJSON(in)
		}
	}
	return http.StatusNotFound, notFound
}

func listInstallationRepos(d *Double, c *call) (int, any) {
	seen := map[string]bool{}
	var items []any
	for _, r := range d.runs {
		if seen[r.repo] || !c.covers(scopeKey{"repo", strings.ToLower(r.repo)}) {
			continue
		}
		seen[r.repo] = true
		tmpl := d.example("apps/list-repos-accessible-to-installation", 200)
		list, _ := tmpl["repositories"].([]any)
		if m, ok := list[0].(map[string]any); ok {
			items = append(items, d.repoJSON(r.repo, m))
		}
	}
	return http.StatusOK, map[string]any{"total_count": len(items), "repositories": nonNil(c.page(items)), "repository_selection": "all"}
}

func (d *Double) orgGroups(org string) []*group {
	return append([]*group{{id: 1, name: "Default"}}, d.groups[strings.ToLower(org)]...)
}

func groupJSON(org string, g *group) map[string]any {
	return map[string]any{
		"id": g.id, "name": g.name, "visibility": "all", "default": g.id == 1,
		"runners_url":                fmt.Sprintf("https://api.github.com/orgs/%s/actions/runner-groups/%d/runners", org, g.id),
		"inherited":                  false,
		"allows_public_repositories": true,
	}
}

func listGroups(d *Double, c *call) (int, any) {
	s, _ := c.scope()
	var items []any
	for _, g := range d.orgGroups(s.name) {
		items = append(items, groupJSON(s.name, g))
	}
	return http.StatusOK, map[string]any{"total_count": len(items), "runner_groups": nonNil(c.page(items))}
}

func createGroup(d *Double, c *call) (int, any) {
	s, _ := c.scope()
	name, _ := c.body["name"].(string)
	g := &group{id: d.id(), name: name}
	d.groups[s.name] = append(d.groups[s.name], g)
	return http.StatusCreated, groupJSON(s.name, g)
}

func (d *Double) repoRuns(repo string) []*run {
	var out []*run
	for _, r := range d.runs {
		if strings.EqualFold(r.repo, repo) {
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].id > out[j].id }) // newest first, as GitHub
	return out
}

func listRuns(d *Double, c *call) (int, any) {
	s, _ := c.scope()
	if !c.covers(s) {
		return http.StatusForbidden, basicError("Resource not accessible by integration")
	}
	status := first(c.query["status"])
	var items []any
	for _, r := range d.repoRuns(s.name) {
		if status == "" || r.status == status || r.conclusion == status {
			items = append(items, d.runJSON(r))
		}
	}
	return http.StatusOK, map[string]any{"total_count": len(items), "workflow_runs": nonNil(c.page(items))}
}

func listJobs(d *Double, c *call) (int, any) {
	s, _ := c.scope()
	if !c.covers(s) {
		return http.StatusForbidden, basicError("Resource not accessible by integration")
	}
	r := d.runs[c.intPath("run_id")]
	if r == nil || !strings.EqualFold(r.repo, s.name) {
		return http.StatusNotFound, notFound
	}
	var items []any
	for _, id := range r.jobs {
		items = append(items, d.jobJSON(d.jobs[id]))
	}
	return http.StatusOK, map[string]any{"total_count": len(items), "jobs": nonNil(c.page(items))}
}

func getJob(d *Double, c *call) (int, any) {
	s, _ := c.scope()
	if !c.covers(s) {
		return http.StatusForbidden, basicError("Resource not accessible by integration")
	}
	j := d.jobs[c.intPath("job_id")]
	if j == nil || !strings.EqualFold(j.repo, s.name) {
		return http.StatusNotFound, notFound
	}
	return http.StatusOK, d.jobJSON(j)
}
