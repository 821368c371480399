package github

import (
	"encoding/json"
	"net/http"
	"strings"
	"time"

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
	var ev jobDelivery
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
		changed, told, why := c.observeDelivery(&ev)
		c.log.Debug("github webhook", "delivery", delivery, "action", ev.Action,
			"job", ev.WorkflowJob.ID, "repo", ev.Repo.FullName, "result", why)
		if changed && !told {
			kick() // a pool that does not listen reads the queue at a full pass
		}
		forge.Answer(w, http.StatusOK, why)
	default:
		forge.Answer(w, http.StatusAccepted, "event ignored")
	}
}

// jobDelivery is what a workflow_job delivery's payload (the
// workflow_job webhook event) says that the queue takes: decoded into
// these fields only, not go-github's whole event (its repository,
// sender and organization objects): 20 allocations per delivery
// instead of 256 (docs/performance.md, "The start path's CPU after the
// journal"). The types are go-github's, so each field is read as
// before; the document must still be JSON throughout, but fields the
// queue does not read are not type-checked.
type jobDelivery struct {
	Action      string `json:"action"`
	WorkflowJob *struct {
		ID         int64         `json:"id"`
		Status     string        `json:"status"`
		Labels     []string      `json:"labels"`
		CreatedAt  *gh.Timestamp `json:"created_at"` // a pointer, as go-github's: null is none
		RunnerName string        `json:"runner_name"`
	} `json:"workflow_job"`
	Repo *struct {
		FullName string `json:"full_name"`
	} `json:"repository"`
	Enterprise struct {
		Slug string `json:"slug"`
	} `json:"enterprise"`
}

// observeDelivery records a workflow_job delivery: the action is the
// job's new state, but for action "queued" with status "waiting": a job
// held for an environment's approval, not demand (deliveryStatus). told: every pool the change concerns was told of it
// (Pool.NotifyQueue).
func (c *Client) observeDelivery(ev *jobDelivery) (changed, told bool, why string) {
	repo, enterprise := ev.Repo.FullName, ev.Enterprise.Slug
	if !c.inScope(repo, enterprise) {
		return false, false, "not a repository of this forge's pools"
	}
	st := deliveryStatus(ev.Action, ev.WorkflowJob.Status)
	if st == 0 {
		return false, false, "action ignored"
	}
	j := ev.WorkflowJob
	var queuedAt time.Time
	if j.CreatedAt != nil {
		queuedAt = j.CreatedAt.Time
	}
	changed, told = c.demand.observe(jobState{
		id: j.ID, repo: repo, enterprise: enterprise, labels: j.Labels, status: st,
		queuedAt: queuedAt, runner: j.RunnerName, delivered: true,
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
