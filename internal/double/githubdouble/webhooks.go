package githubdouble

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"
)

// WebhookTarget is where the double delivers workflow_job webhooks, as a
// repository's or organisation's webhook (or an App's) would.
type WebhookTarget struct {
	URL    string
	Secret string
	Client *http.Client
	// Examples is GitHub's workflow_job example payloads (a JSON list);
	// deliveries are built on the first "queued" one. Required.
	Examples []byte
	// Drop is the share of deliveries lost; Duplicate the share sent twice
	// (a redelivery, same delivery id).
	Drop, Duplicate float64
}

// SignPayload is GitHub's X-Hub-Signature-256 of a body.
func SignPayload(secret string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// hookSender delivers in order, one at a time, like GitHub's per-hook
// queue.
type hookSender struct {
	t        WebhookTarget
	template map[string]any
	queue    chan delivery
	stop     context.CancelFunc
	done     chan struct{}

	mu                      sync.Mutex
	sent, dropped, failures int
}

type delivery struct {
	id   string
	body []byte
}

// SetWebhook starts delivering webhooks to t; Close stops.
func (d *Double) SetWebhook(t WebhookTarget) error {
	var examples []map[string]any
	if err := json.Unmarshal(t.Examples, &examples); err != nil {
		return fmt.Errorf("githubdouble: webhook examples: %w", err)
	}
	var tmpl map[string]any
	for _, e := range examples {
		if e["action"] == "queued" {
			tmpl = e
			break
		}
	}
	if tmpl == nil {
		return fmt.Errorf("githubdouble: no queued example payload")
	}
	if t.Client == nil {
		t.Client = &http.Client{Timeout: 10 * time.Second}
	}
	ctx, cancel := context.WithCancel(context.Background())
	h := &hookSender{t: t, template: tmpl, queue: make(chan delivery, 4096), stop: cancel, done: make(chan struct{})}
	go h.run(ctx, d)
	d.mu.Lock()
	old := d.hooks
	d.hooks = h
	d.mu.Unlock()
	if old != nil {
		old.close()
	}
	return nil
}

// SetWebhookFaults changes the share of lost and duplicated deliveries.
func (d *Double) SetWebhookFaults(drop, duplicate float64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.hooks != nil {
		d.hooks.mu.Lock()
		d.hooks.t.Drop, d.hooks.t.Duplicate = drop, duplicate
		d.hooks.mu.Unlock()
	}
}

// Close stops webhook deliveries.
func (d *Double) Close() {
	d.mu.Lock()
	h := d.hooks
	d.hooks = nil
	d.mu.Unlock()
	if h != nil {
		h.close()
	}
}

func (h *hookSender) close() {
	h.stop()
	<-h.done
}

// Deliveries counts webhook deliveries: sent (answered 2xx), dropped on
// purpose, failed (no 2xx answer).
func (d *Double) Deliveries() (sent, dropped, failed int) {
	d.mu.Lock()
	h := d.hooks
	d.mu.Unlock()
	if h == nil {
		return 0, 0, 0
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.sent, h.dropped, h.failures
}

// emit queues a workflow_job delivery for a job's new state. Callers hold
// d.mu.
func (d *Double) emit(action string, j *job) {
	h := d.hooks
	if h == nil {
		return
	}
	p := jsonCopy(h.template)
	p["action"] = action
	wj, _ := p["workflow_job"].(map[string]any)
	labels := make([]any, len(j.labels))
	for i, l := range j.labels {
		labels[i] = l
	}
	wj["id"], wj["run_id"], wj["name"], wj["status"], wj["labels"] = j.id, j.runID, j.name, j.status, labels
	wj["run_url"] = fmt.Sprintf("https://api.github.com/repos/%s/actions/runs/%d", j.repo, j.runID)
	wj["url"] = fmt.Sprintf("https://api.github.com/repos/%s/actions/jobs/%d", j.repo, j.id)
	wj["created_at"], wj["started_at"], wj["completed_at"] = stamp(j.created), stamp(j.created), nullTime(j.completed)
	if !j.started.IsZero() {
		wj["started_at"] = stamp(j.started)
	}
	wj["conclusion"] = nil
	if j.conclusion != "" {
		wj["conclusion"] = j.conclusion
	}
	wj["runner_id"], wj["runner_name"], wj["runner_group_id"], wj["runner_group_name"] = nil, nil, nil, nil
	if j.runnerID != 0 {
		wj["runner_id"], wj["runner_name"], wj["runner_group_id"], wj["runner_group_name"] = j.runnerID, j.runnerName, 1, "Default"
	}
	owner, name, _ := strings.Cut(j.repo, "/")
	if repo, ok := p["repository"].(map[string]any); ok {
		repo["name"], repo["full_name"] = name, j.repo
		if o, ok := repo["owner"].(map[string]any); ok {
			o["login"] = owner
		}
	}
	p["organization"] = map[string]any{"login": owner, "id": 1}
	body, _ := json.Marshal(p)
	select {
	case h.queue <- delivery{id: "d-" + randomHex(8), body: body}:
	default:
		d.logf("webhook queue full: delivery dropped")
	}
}

func (h *hookSender) run(ctx context.Context, d *Double) {
	defer close(h.done)
	for {
		select {
		case <-ctx.Done():
			return
		case dl := <-h.queue:
			h.mu.Lock()
			dropP, dupP := h.t.Drop, h.t.Duplicate
			h.mu.Unlock()
			d.mu.Lock()
			drop, dup := d.rng.Float64() < dropP, d.rng.Float64() < dupP
			d.mu.Unlock()
			if drop {
				h.count(&h.dropped)
				d.logf("webhook %s dropped on purpose", dl.id)
				continue
			}
			h.post(ctx, d, dl)
			if dup {
				h.post(ctx, d, dl)
			}
		}
	}
}

func (h *hookSender) count(n *int) {
	h.mu.Lock()
	*n++
	h.mu.Unlock()
}

func (h *hookSender) post(ctx context.Context, d *Double, dl delivery) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.t.URL, bytes.NewReader(dl.body))
	if err != nil {
		h.count(&h.failures)
		return
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "GitHub-Hookshot/double")
	req.Header.Set("X-GitHub-Event", "workflow_job")
	req.Header.Set("X-GitHub-Delivery", dl.id)
	req.Header.Set("X-Hub-Signature-256", SignPayload(h.t.Secret, dl.body))
	resp, err := h.t.Client.Do(req)
	if err != nil {
		h.count(&h.failures)
		d.logf("webhook %s: %v", dl.id, err)
		return
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		h.count(&h.failures)
		d.logf("webhook %s: %s", dl.id, resp.Status)
		return
	}
	h.count(&h.sent)
}

func jsonCopy(m map[string]any) map[string]any {
	b, _ := json.Marshal(m)
	var out map[string]any
	_ = json.Unmarshal(b, &out)
	return out
}
