package gitea

import (
	"encoding/json"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/forge"
)

// maxWebhookBody bounds a delivery the API has not read already; the
// API's own limit is limits.webhook_max_body. A workflow_job payload is
// a few KiB.
const maxWebhookBody = 1 << 20

// maxDeliveries is how many delivery ids the driver remembers.
const maxDeliveries = 4096

// workflowJobPayload is the part of Gitea's workflow_job payload the
// driver reads (modules/structs: WorkflowJobPayload, ActionWorkflowJob,
// Repository). Action is the job's state as Gitea names it for webhooks
// (services/convert.ToActionsStatus): "queued" (waiting for a runner),
// "waiting" (blocked by its needs), "in_progress", "completed".
type workflowJobPayload struct {
	Action      string `json:"action"`
	WorkflowJob *struct {
		ID        int64     `json:"id"`
		RunURL    string    `json:"run_url"`
		Labels    []string  `json:"labels"`
		CreatedAt time.Time `json:"created_at"`
	} `json:"workflow_job"`
	Repo *struct {
		FullName string `json:"full_name"`
		Owner    struct {
			Login string `json:"login"`
		} `json:"owner"`
	} `json:"repository"`
}

// ServeWebhook implements forge.WebhookReceiver for Gitea's webhooks
// (services/webhook/deliver.go of Gitea 1.26), once per forge: the body
// is bounded, its X-Gitea-Signature (hex HMAC-SHA256 of the body with
// the secret) is checked in constant time before anything of it is
// parsed (401 when it does not match), a delivery id (X-Gitea-Delivery)
// seen before is acknowledged and ignored, and a workflow_job delivery
// updates the queue of every scope covering its repository: those that
// listen are told the change (NotifyQueue), kick is called for the
// others.
func (d *Driver) ServeWebhook(w http.ResponseWriter, r *http.Request, kick func()) {
	if d.o.WebhookSecret == "" {
		forge.Answer(w, http.StatusNotFound, "webhooks are off for this forge: set webhook_secret_file")
		return
	}
	d.mu.Lock()
	scopes := d.scopes
	d.mu.Unlock()
	if len(scopes) == 0 {
		forge.Answer(w, http.StatusNotFound, "no pool takes this forge's webhooks")
		return
	}
	// Gitea signs the JSON payload; a "form" webhook sends it
	// url-encoded, whose bytes the signature does not cover.
	if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); ct != "application/json" {
		forge.Answer(w, http.StatusUnsupportedMediaType, "set the webhook's content type to application/json")
		return
	}
	delivery, body, ok := d.hooks.Read(w, r)
	if !ok {
		return
	}
	event := r.Header.Get("X-Gitea-Event")
	var ev workflowJobPayload
	if event == "workflow_job" {
		if err := json.Unmarshal(body, &ev); err != nil || ev.WorkflowJob == nil || ev.Repo == nil || ev.WorkflowJob.ID == 0 {
			forge.Answer(w, http.StatusBadRequest, "not a workflow_job payload")
			return
		}
	}
	if delivery != "" && !d.deliveries.First(delivery) {
		forge.Answer(w, http.StatusOK, "duplicate delivery ignored")
		return
	}
	if event != "workflow_job" {
		forge.Answer(w, http.StatusAccepted, "event ignored")
		return
	}
	changed, untold := false, false
	for _, f := range scopes {
		c, told := f.observe(&ev, time.Now())
		changed = changed || c
		untold = untold || (c && !told)
	}
	d.log.Debug("gitea webhook", "delivery", delivery, "action", ev.Action, "job", ev.WorkflowJob.ID,
		"repo", ev.Repo.FullName, "changed", changed)
	if untold {
		kick() // a scope that does not listen reads the queue at a full pass
	}
	if changed {
		forge.Answer(w, http.StatusOK, "queue changed")
		return
	}
	forge.Answer(w, http.StatusOK, "queue unchanged")
}

// covers reports whether the scope holds the repository (Gitea's owner
// and repository names are case-insensitive).
func (s Scope) covers(owner, fullName string) bool {
	switch s.Kind {
	case "instance":
		return true
	case "org":
		return strings.EqualFold(owner, s.Org)
	case "repo":
		return strings.EqualFold(fullName, s.Owner+"/"+s.Repo)
	}
	return false
}

// observe applies a verified workflow_job delivery to the scope: a
// "queued" job joins its queue, any later state leaves it. changed: the
// queue changed; told: the change went to the scope's listener.
func (f *Forge) observe(ev *workflowJobPayload, now time.Time) (changed, told bool) {
	if !f.scope.covers(ev.Repo.Owner.Login, ev.Repo.FullName) {
		return false, false
	}
	j := ev.WorkflowJob
	job := forge.Job{ID: strconv.FormatInt(j.ID, 10), Labels: j.Labels, Repo: ev.Repo.FullName, QueuedAt: j.CreatedAt}
	f.mu.Lock()
	defer f.mu.Unlock()
	_, had := f.hooked[j.ID]
	switch ev.Action {
	case "queued":
		f.hooked[j.ID] = hookedJob{job: job, at: now}
		changed = !had
	case "in_progress", "completed":
		delete(f.hooked, j.ID)
		changed = had
	default: // "waiting": blocked by its needs, not yet for a runner
		return false, false
	}
	if f.notify == nil {
		return changed, false
	}
	// A job the poll saw queued may leave without a delivery of its
	// joining: the listener is told it left all the same (it ignores
	// jobs it does not hold).
	if changed || ev.Action != "queued" {
		f.notify(forge.QueueChange{Job: job, Queued: ev.Action == "queued"})
	}
	return changed, true
}
