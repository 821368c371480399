package github

import (
	"encoding/json"
	"net/http"
	"strings"

	gh "github.com/google/go-github/v93/github"

	"github.com/nixos-fireactions/nixos-fireactions/forge"
)

// maxWebhookBody bounds a delivery the API has not read already (GitHub
// caps payloads at 25 MB); the API's own limit is limits.webhook_max_body.
const maxWebhookBody = 25 << 20

// ServeWebhook implements forge.WebhookReceiver for GitHub's webhooks,
// once per forge: the X-Hub-Signature-256 HMAC is checked in constant
// time (401 when it does not match), a delivery id seen before is
// acknowledged and ignored, and a workflow_job delivery updates the one
// queue of the forge, whose pools each see the jobs of their scope; kick
// is called when it changed and a pool it concerns was not told
// (Pool.NotifyQueue).
func (c *Client) ServeWebhook(w http.ResponseWriter, r *http.Request, kick func()) {
	if c.secret == "" {
		forge.Answer(w, http.StatusNotFound, "webhooks are off for this forge: set webhook_secret_file")
		return
	}
	c.mu.Lock()
	pools := len(c.pools)
	c.mu.Unlock()
	if pools == 0 {
		forge.Answer(w, http.StatusNotFound, "no pool takes this forge's webhooks")
		return
	}
	delivery, body, ok := c.hooks.Read(w, r)
	if !ok {
		return
	}
	event := r.Header.Get("X-GitHub-Event")
	// One decoding: go-github's event type plus what it leaves out.
	var ev struct {
		gh.WorkflowJobEvent
		Enterprise struct {
			Slug string `json:"slug"`
		} `json:"enterprise"`
	}
	if event == "workflow_job" {
		if err := json.Unmarshal(body, &ev); err != nil || ev.WorkflowJob == nil || ev.Repo == nil {
			forge.Answer(w, http.StatusBadRequest, "not a workflow_job payload")
			return
		}
	}
	if delivery != "" && !c.demand.fresh(delivery) {
		forge.Answer(w, http.StatusOK, "duplicate delivery ignored")
		return
	}
	switch event {
	case "ping":
		forge.Answer(w, http.StatusOK, "pong")
	case "workflow_job":
		changed, told, why := c.observeDelivery(&ev.WorkflowJobEvent, ev.Enterprise.Slug)
		c.log.Debug("github webhook", "delivery", delivery, "action", ev.GetAction(),
			"job", ev.WorkflowJob.GetID(), "repo", ev.Repo.GetFullName(), "result", why)
		if changed && !told {
			kick() // a pool that does not listen reads the queue at a full pass
		}
		forge.Answer(w, http.StatusOK, why)
	default:
		forge.Answer(w, http.StatusAccepted, "event ignored")
	}
}

// observeDelivery records a workflow_job delivery: the action is the
// job's new state, but for action "queued" with status "waiting": a job
// held for an environment's approval, not demand (deliveryStatus). told: every pool the change concerns was told of it
// (Pool.NotifyQueue).
func (c *Client) observeDelivery(ev *gh.WorkflowJobEvent, enterprise string) (changed, told bool, why string) {
	repo := ev.Repo.GetFullName()
	if !c.inScope(repo, enterprise) {
		return false, false, "not a repository of this forge's pools"
	}
	st := deliveryStatus(ev.GetAction(), ev.WorkflowJob.GetStatus())
	if st == 0 {
		return false, false, "action ignored"
	}
	j := ev.WorkflowJob
	changed, told = c.demand.observe(jobState{
		id: j.GetID(), repo: repo, enterprise: enterprise, labels: j.Labels, status: st,
		queuedAt: j.GetCreatedAt().Time, runner: j.GetRunnerName(), delivered: true,
	}, c.now())
	if changed {
		return true, told, "queue changed"
	}
	return false, false, "queue unchanged"
}

// deliveryStatus is the state a workflow_job delivery gives its job:
// its action's, except that a job queued behind an environment's
// protection rule (action "queued", status "waiting") is waiting for an
// approval, not for a runner.
func deliveryStatus(action, jobStatus string) status {
	st := parseStatus(action)
	if st == statusQueued && parseStatus(jobStatus) == statusWaiting {
		return statusWaiting
	}
	return st
}

// inScope reports whether any pool of the forge covers the repository.
func (c *Client) inScope(repo, enterprise string) bool {
	c.mu.Lock()
	pools := c.pools
	c.mu.Unlock()
	for _, p := range pools {
		if p.covers(repo, enterprise) {
			return true
		}
	}
	return false
}

// signed checks GitHub's "sha256=HEX" HMAC of the body in constant time.
func signed(secret, header string, body []byte) bool {
	hexSum, ok := strings.CutPrefix(header, "sha256=")
	return ok && forge.SignedSHA256(secret, hexSum, body)
}
