package giteadouble

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
)

// Hook is a webhook of Gitea's, as its settings page makes one.
type Hook struct {
	URL    string
	Secret string // empty: Gitea sends empty signatures
	// Form sends the payload url-encoded ("application/x-www-form-urlencoded");
	// default JSON.
	Form bool
}

// Delivery is one webhook delivery.
type Delivery struct {
	UUID   string // X-Gitea-Delivery
	Event  string // X-Gitea-Event, e.g. "workflow_job"
	Body   []byte
	Header http.Header
}

// WorkflowJob builds the workflow_job delivery Gitea 1.26 sends when job
// changes state (services/webhook/notifier.go WorkflowJobStatusUpdate):
// action is the job's new state ("queued", "waiting", "in_progress",
// "completed"), the repository is owner/name.
func (h Hook) WorkflowJob(uuid, action string, job Job, owner, name string) Delivery {
	type user struct {
		ID       int64  `json:"id"`
		Login    string `json:"login"`
		UserName string `json:"username"`
	}
	payload := map[string]any{
		"action": action,
		"workflow_job": map[string]any{
			"id": job.ID, "run_id": job.RunID, "run_url": job.RunURL, "name": job.Name,
			"labels": job.Labels, "run_attempt": 1, "head_sha": "0000000000000000000000000000000000000000",
			"status": action, "steps": []any{}, "created_at": job.CreatedAt.Format(time.RFC3339),
			"started_at": time.Time{}.Format(time.RFC3339), "completed_at": time.Time{}.Format(time.RFC3339),
		},
		"repository": map[string]any{
			"id": 1, "name": name, "full_name": owner + "/" + name,
			"owner": user{ID: 1, Login: owner, UserName: owner},
		},
		"sender": user{ID: 1, Login: owner, UserName: owner},
	}
	if action == "completed" {
		payload["workflow_job"].(map[string]any)["conclusion"] = "success"
	}
	body, _ := json.MarshalIndent(payload, "", "  ") // as Gitea's JSONPayload does
	return h.delivery(uuid, "workflow_job", body)
}

// delivery signs body and sets the headers services/webhook/deliver.go
// (addDefaultHeaders) sets.
func (h Hook) delivery(uuid, event string, body []byte) Delivery {
	var sig1, sig256 string
	if h.Secret != "" {
		m1, m256 := hmac.New(sha1.New, []byte(h.Secret)), hmac.New(sha256.New, []byte(h.Secret))
		m1.Write(body)
		m256.Write(body)
		sig1, sig256 = hex.EncodeToString(m1.Sum(nil)), hex.EncodeToString(m256.Sum(nil))
	}
	hd := http.Header{}
	hd.Set("Content-Type", "application/json")
	hd.Set("User-Agent", "Go-http-client/1.1")
	hd.Add("X-Gitea-Delivery", uuid)
	hd.Add("X-Gitea-Event", event)
	hd.Add("X-Gitea-Event-Type", event)
	hd.Add("X-Gitea-Signature", sig256)
	hd.Add("X-Gitea-Hook-Installation-Target-Type", "repository")
	hd.Add("X-Gogs-Delivery", uuid)
	hd.Add("X-Gogs-Event", event)
	hd.Add("X-Gogs-Event-Type", event)
	hd.Add("X-Gogs-Signature", sig256)
	hd.Add("X-Hub-Signature", "sha1="+sig1)
	hd.Add("X-Hub-Signature-256", "sha256="+sig256)
	hd["X-GitHub-Delivery"] = []string{uuid}
	hd["X-GitHub-Event"] = []string{event}
	hd["X-GitHub-Event-Type"] = []string{event}
	hd["X-GitHub-Hook-Installation-Target-Type"] = []string{"repository"}
	d := Delivery{UUID: uuid, Event: event, Body: body, Header: hd}
	if h.Form {
		// The signature stays that of the JSON payload.
		d.Body = []byte(url.Values{"payload": {string(body)}}.Encode())
		d.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	return d
}

// Send posts the delivery to the hook's URL and returns the answer's
// status and body.
func (h Hook) Send(ctx context.Context, d Delivery) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.URL, bytes.NewReader(d.Body))
	if err != nil {
		return 0, "", err
	}
	req.Header = d.Header.Clone()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", fmt.Errorf("deliver %s: %w", d.UUID, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode, string(b), nil
}
