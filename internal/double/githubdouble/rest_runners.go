package githubdouble

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"
)

// runnersIn lists a scope's runners by id.
func (d *Double) runnersIn(s scopeKey) []*runner {
	var out []*runner
	for _, r := range d.runners.byID {
		if r.scope == s {
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].id < out[j].id })
	return out
}

func listRunners(d *Double, c *call) (int, any) {
	s, _ := c.scope()
	name := first(c.query["name"])
	var items []any
	for _, r := range d.runnersIn(s) {
		if name == "" || r.name == name {
			items = append(items, r.json())
		}
	}
	return http.StatusOK, map[string]any{"total_count": len(items), "runners": nonNil(c.page(items))}
}

// registrationToken is create-registration-token: a token of the scope,
// an hour long, that the Actions service registers a runner with
// (runnerRegistration).
func registrationToken(d *Double, c *call) (int, any) {
	s, _ := c.scope()
	tok, exp := scopeToken()
	d.rememberRegToken(tok, s, exp)
	return http.StatusCreated, map[string]any{"token": tok, "expires_at": stamp(exp)}
}

// removeToken is create-remove-token: a token for config.sh's remove,
// which the double does not serve; it registers no runner.
func removeToken(d *Double, c *call) (int, any) {
	tok, exp := scopeToken()
	return http.StatusCreated, map[string]any{"token": tok, "expires_at": stamp(exp)}
}

// scopeToken is a new registration or remove token and its expiry.
func scopeToken() (string, time.Time) {
	return "A" + strings.ToUpper(randomHex(14)), time.Now().Add(time.Hour)
}

// runnerAt finds the runner the path names in the path's scope.
func (d *Double) runnerAt(c *call) (*runner, int, any) {
	s, _ := c.scope()
	r := d.runners.byID[c.intPath("runner_id")]
	if r == nil || r.scope != s {
		return nil, http.StatusNotFound, notFound
	}
	return r, 0, nil
}

func getRunner(d *Double, c *call) (int, any) {
	r, status, body := d.runnerAt(c)
	if r == nil {
		return status, body
	}
	return http.StatusOK, r.json()
}

func deleteRunner(d *Double, c *call) (int, any) {
	r, status, body := d.runnerAt(c)
	if r == nil {
		return status, body
	}
	if r.busy {
		return http.StatusUnprocessableEntity, basicError(fmt.Sprintf("Bad request - Runner %q is still running a job", r.name))
	}
	d.runners.remove(r.id)
	d.notify()
	return http.StatusNoContent, nil
}

func labels(action string) handler {
	return func(d *Double, c *call) (int, any) {
		r, status, body := d.runnerAt(c)
		if r == nil {
			return status, body
		}
		var given []string
		if raw, ok := c.body["labels"].([]any); ok {
			for _, l := range raw {
				if s, ok := l.(string); ok {
					given = append(given, s)
				}
			}
		}
		readOnly := func(l string) bool {
			switch strings.ToLower(l) {
			case "self-hosted", "linux", "x64":
				return true
			}
			return false
		}
		switch action {
		case "add":
			r.labels = append(r.labels, given...)
		case "set", "clear":
			var keep []string
			for _, l := range r.labels {
				if readOnly(l) {
					keep = append(keep, l)
				}
			}
			r.labels = append(keep, given...)
		case "remove":
			name := c.path["name"]
			found := false
			var keep []string
			for _, l := range r.labels {
				if strings.EqualFold(l, name) && !readOnly(l) {
					found = true
					continue
				}
				keep = append(keep, l)
			}
			if !found {
				return http.StatusNotFound, notFound
			}
			r.labels = keep
		}
		list, _ := r.json()["labels"].([]any)
		return http.StatusOK, map[string]any{"total_count": len(list), "labels": list}
	}
}

// generateJIT registers a just-in-time runner: a name unique in its
// scope, a runner group, labels; the configuration holds the runner's own
// credential only.
func generateJIT(d *Double, c *call) (int, any) {
	s, _ := c.scope()
	name, _ := c.body["name"].(string)
	if d.runners.named(s, name) != nil {
		return http.StatusConflict, basicError(fmt.Sprintf("Already exists - A runner with the name %s already exists.", name))
	}
	gid := int64(1)
	if n, ok := c.body["runner_group_id"].(float64); ok {
		gid = int64(n)
	}
	if s.kind == "org" {
		known := false
		for _, g := range d.orgGroups(s.name) {
			known = known || g.id == gid
		}
		if !known {
			return http.StatusNotFound, basicError("Runner group not found")
		}
	}
	var lbls []string
	if raw, ok := c.body["labels"].([]any); ok {
		for _, l := range raw {
			if str, ok := l.(string); ok {
				lbls = append(lbls, str)
			}
		}
	}
	r := &runner{id: d.id(), name: name, scope: s, labels: lbls, group: gid, status: "offline", secret: "runner-secret-" + randomHex(16)}
	jit := d.encodeJIT(r)
	d.runners.add(r)
	d.issued[r.id] = issuedRunner{name: name, jit: jit, secret: r.secret}
	d.notify()
	return http.StatusCreated, map[string]any{"runner": r.json(), "encoded_jit_config": jit}
}

// runnerURL is where runner name reaches the double: the RunnerURLs
// entry of the longest prefix of name, else RunnerURL.
func (d *Double) runnerURL(name string) string {
	url, best := d.o.RunnerURL, -1
	for prefix, u := range d.o.RunnerURLs {
		if strings.HasPrefix(name, prefix) && len(prefix) > best {
			url, best = u, len(prefix)
		}
	}
	return url
}

// encodeJIT is a JIT configuration in the runner's layout: a base64 JSON
// map of base64 files, .runner and .credentials.
func (d *Double) encodeJIT(r *runner) string {
	file := func(v any) string {
		b, _ := json.Marshal(v)
		return base64.StdEncoding.EncodeToString(b)
	}
	cfg := map[string]string{
		".runner": file(RunnerFile{AgentID: r.id, AgentName: r.name, PoolID: r.group, ServerURL: d.runnerURL(r.name),
			GitHubURL: "https://github.com/" + r.scope.name, WorkFolder: "_work", Ephemeral: true}),
		".credentials": file(Credentials{Scheme: "OAuthAccessToken", Data: map[string]string{"token": r.secret}}),
	}
	b, _ := json.Marshal(cfg)
	return base64.StdEncoding.EncodeToString(b)
}
