package githubdouble

import (
	"fmt"
	"strings"
	"time"
)

// Objects are built from the description's own response examples, with
// this double's values put in, so they carry every field GitHub's do.

// example is a fresh copy of an operation's described example, as a map.
func (d *Double) example(opID string, status int) map[string]any {
	if m, ok := d.exampleValue(opID, status).(map[string]any); ok {
		return m
	}
	return map[string]any{}
}

// exampleValue is a fresh copy of an operation's described example.
func (d *Double) exampleValue(opID string, status int) any {
	for _, op := range d.o.Spec.Operations() {
		if op.ID == opID {
			return op.Example(status)
		}
	}
	return nil
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }

func nullTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return stamp(t)
}

// account is a user or organisation object that also carries the fields
// of an enterprise, as the installation schemas ask (the list's allOf).
func account(login, typ string, id int64) map[string]any {
	base := "https://api.github.com/users/" + login
	return map[string]any{
		"login": login, "id": id, "node_id": fmt.Sprintf("MDQ6VXNlcj%d", id),
		"avatar_url": "https://avatars.githubusercontent.com/u/1", "gravatar_id": "",
		"url": base, "html_url": "https://github.com/" + login,
		"followers_url": base + "/followers", "following_url": base + "/following{/other_user}",
		"gists_url": base + "/gists{/gist_id}", "starred_url": base + "/starred{/owner}{/repo}",
		"subscriptions_url": base + "/subscriptions", "organizations_url": base + "/orgs",
		"repos_url": base + "/repos", "events_url": base + "/events{/privacy}",
		"received_events_url": base + "/received_events", "type": typ, "site_admin": false,
		// Enterprise fields.
		"name": login, "slug": login, "created_at": "2020-01-01T00:00:00Z", "updated_at": "2020-01-01T00:00:00Z",
	}
}

func (d *Double) installationJSON(in *installation) map[string]any {
	m := d.example("apps/get-org-installation", 200)
	m["id"] = in.id
	m["app_id"] = d.o.AppID
	m["target_id"] = in.id + 1000
	m["target_type"] = in.targetType
	m["account"] = account(in.account, in.targetType, in.id+1000)
	m["access_tokens_url"] = fmt.Sprintf("https://api.github.com/app/installations/%d/access_tokens", in.id)
	m["repository_selection"] = "all"
	if len(in.repos) > 0 {
		m["repository_selection"] = "selected"
	}
	return m
}

func (r *runner) json() map[string]any {
	labels := make([]any, len(r.labels))
	for i, l := range r.labels {
		typ := "custom"
		switch strings.ToLower(l) {
		case "self-hosted", "linux", "x64":
			typ = "read-only"
		}
		labels[i] = map[string]any{"id": i + 1, "name": l, "type": typ}
	}
	return map[string]any{
		"id": r.id, "runner_group_id": r.group, "name": r.name, "os": "Linux",
		"status": r.status, "busy": r.busy, "ephemeral": true, "labels": labels,
	}
}

// repoJSON is a repository object for OWNER/NAME.
func (d *Double) repoJSON(full string, template map[string]any) map[string]any {
	owner, name, _ := strings.Cut(full, "/")
	m := template
	m["name"] = name
	m["full_name"] = full
	m["html_url"] = "https://github.com/" + full
	m["url"] = "https://api.github.com/repos/" + full
	if o, ok := m["owner"].(map[string]any); ok {
		o["login"] = owner
	}
	return m
}

func (d *Double) runJSON(r *run) map[string]any {
	tmpl := d.example("actions/list-workflow-runs-for-repo", 200)
	list, _ := tmpl["workflow_runs"].([]any)
	m, _ := list[0].(map[string]any)
	m["id"] = r.id
	m["status"] = r.status
	m["conclusion"] = nil
	if r.conclusion != "" {
		m["conclusion"] = r.conclusion
	}
	m["created_at"] = stamp(r.created)
	m["updated_at"] = stamp(r.created)
	api := "https://api.github.com/repos/" + r.repo + "/actions/runs/" + fmt.Sprint(r.id)
	m["url"] = api
	m["jobs_url"] = api + "/jobs"
	if repo, ok := m["repository"].(map[string]any); ok {
		m["repository"] = d.repoJSON(r.repo, repo)
	}
	if repo, ok := m["head_repository"].(map[string]any); ok {
		m["head_repository"] = d.repoJSON(r.repo, repo)
	}
	return m
}

func (d *Double) jobJSON(j *job) map[string]any {
	tmpl := d.example("actions/list-jobs-for-workflow-run", 200)
	list, _ := tmpl["jobs"].([]any)
	m, _ := list[0].(map[string]any)
	labels := make([]any, len(j.labels))
	for i, l := range j.labels {
		labels[i] = l
	}
	started := j.started
	if started.IsZero() {
		started = j.created // GitHub's queued jobs carry their creation time
	}
	m["id"] = j.id
	m["run_id"] = j.runID
	m["run_url"] = fmt.Sprintf("https://api.github.com/repos/%s/actions/runs/%d", j.repo, j.runID)
	m["url"] = fmt.Sprintf("https://api.github.com/repos/%s/actions/jobs/%d", j.repo, j.id)
	m["name"] = j.name
	m["status"] = j.status
	m["conclusion"] = nil
	if j.conclusion != "" {
		m["conclusion"] = j.conclusion
	}
	m["labels"] = labels
	m["created_at"] = stamp(j.created)
	m["started_at"] = stamp(started)
	m["completed_at"] = nullTime(j.completed)
	m["steps"] = []any{}
	m["runner_id"], m["runner_name"], m["runner_group_id"], m["runner_group_name"] = nil, nil, nil, nil
	if j.runnerID != 0 {
		m["runner_id"], m["runner_name"], m["runner_group_id"], m["runner_group_name"] = j.runnerID, j.runnerName, 1, "Default"
	}
	return m
}
