package gitlabdouble

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"path"
	"time"
)

// hookTarget is where Job Hook webhooks go.
type hookTarget struct {
	url, secret string
	client      *http.Client
	queue       chan hookDelivery
	done        chan struct{}
	results     []Delivery
}

type hookDelivery struct {
	job     int64
	status  string
	payload []byte
}

// Delivery is one webhook delivery and its outcome.
type Delivery struct {
	JobID  int64
	Status string // the job status the delivery announced
	Code   int    // the receiver's HTTP status; 0 when the request failed
}

// SetHook makes the double deliver a Job Hook webhook to url for every
// job status change from now on, in order, with secret in X-Gitlab-Token,
// as a project or group webhook with job events does. Close stops it.
func (s *Server) SetHook(url, secret string, client *http.Client) {
	h := &hookTarget{url: url, secret: secret, client: client, queue: make(chan hookDelivery, 256), done: make(chan struct{})}
	s.mu.Lock()
	s.hook = h
	s.mu.Unlock()
	go s.sendHooks(h)
}

// Close stops webhook deliveries.
func (s *Server) Close() {
	s.mu.Lock()
	h := s.hook
	s.hook = nil
	s.mu.Unlock()
	if h != nil {
		close(h.queue)
		<-h.done
	}
}

// Deliveries returns the webhook deliveries made so far.
func (s *Server) Deliveries() []Delivery {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hook == nil {
		return nil
	}
	return append([]Delivery(nil), s.hook.results...)
}

func (s *Server) sendHooks(h *hookTarget) {
	defer close(h.done)
	for d := range h.queue {
		code := 0
		req, err := http.NewRequest(http.MethodPost, h.url, bytes.NewReader(d.payload))
		if err == nil {
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("User-Agent", "GitLab/18.0.0")
			req.Header.Set("X-Gitlab-Event", "Job Hook")
			req.Header.Set("X-Gitlab-Token", h.secret)
			req.Header.Set("X-Gitlab-Event-UUID", newUUID())
			req.Header.Set("X-Gitlab-Instance", "http://gitlab.invalid")
			if resp, err := h.client.Do(req); err == nil {
				code = resp.StatusCode
				resp.Body.Close()
			}
		}
		s.mu.Lock()
		h.results = append(h.results, Delivery{JobID: d.job, Status: d.status, Code: code})
		s.mu.Unlock()
	}
}

// deliver queues a Job Hook for the job's current state.
func (s *Server) deliver(id int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hook == nil || s.jobs[id] == nil {
		return
	}
	b, _ := json.Marshal(s.jobHookLocked(s.jobs[id]))
	select {
	case s.hook.queue <- hookDelivery{job: id, status: s.jobs[id].Status, payload: b}:
	default:
		s.hook.results = append(s.hook.results, Delivery{JobID: id, Status: s.jobs[id].Status})
	}
}

// JobHook returns the Job Hook payload GitLab sends for the job's current
// state.
func (s *Server) JobHook(id int64) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	j := s.jobs[id]
	if j == nil {
		return nil
	}
	b, _ := json.Marshal(s.jobHookLocked(j))
	return b
}

// hookTime is how Job Hook payloads write times; hookISO is the ISO 8601
// form of the *_iso fields.
func hookTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UTC().Format("2006-01-02 15:04:05 UTC")
}

func hookISO(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UTC().Format("2006-01-02T15:04:05Z")
}

// jobHookLocked builds a Job Hook ("object_kind": "build") payload with
// the fields GitLab documents for job events. The runner is null until a
// runner has taken the job; the job's own tags are not part of it.
func (s *Server) jobHookLocked(j *Job) map[string]any {
	p := s.projects[j.ProjectID]
	name := path.Base(p.FullPath)
	ns := s.groups[p.GroupID].FullPath
	var runner any
	if x := s.runners[j.RunnerID]; x != nil {
		runner = map[string]any{
			"id": x.ID, "description": x.Description, "runner_type": x.Type, "active": !x.Paused,
			"is_shared": x.Type == "instance_type", "tags": nonNil(x.Tags),
		}
	}
	var duration any
	if !j.StartedAt.IsZero() && !j.EndedAt.IsZero() {
		duration = j.EndedAt.Sub(j.StartedAt).Seconds()
	}
	var queued any
	if !j.StartedAt.IsZero() {
		queued = j.StartedAt.Sub(j.CreatedAt).Seconds()
	}
	web := "http://gitlab.invalid/" + p.FullPath
	return map[string]any{
		"object_kind": "build", "ref": j.Ref, "tag": false, "before_sha": "0000000000000000000000000000000000000000",
		"sha": sha(j), "retries_count": 0,
		"build_id": j.ID, "build_name": j.Name, "build_stage": j.Stage, "build_status": j.Status,
		"build_created_at": hookTime(j.CreatedAt), "build_started_at": hookTime(j.StartedAt),
		"build_finished_at": hookTime(j.EndedAt), "build_created_at_iso": hookISO(j.CreatedAt),
		"build_started_at_iso": hookISO(j.StartedAt), "build_finished_at_iso": hookISO(j.EndedAt),
		"build_duration": duration, "build_queued_duration": queued, "build_allow_failure": false,
		"build_failure_reason": "unknown_failure", "pipeline_id": j.ID, "runner": runner,
		"project_id": p.ID, "project_name": ns + " / " + name,
		"user":   map[string]any{"id": 1, "name": "CI User", "username": "ci", "avatar_url": "", "email": "[REDACTED]"},
		"commit": map[string]any{"id": j.ID, "name": nil, "sha": sha(j), "message": "test\n", "author_name": "CI User", "author_email": "ci@example.invalid", "author_url": "mailto:ci@example.invalid", "status": j.Status, "duration": nil, "started_at": hookTime(j.StartedAt), "finished_at": hookTime(j.EndedAt)},
		"repository": map[string]any{
			"name": name, "url": "git@gitlab.invalid:" + p.FullPath + ".git", "description": "", "homepage": web,
			"git_http_url": web + ".git", "git_ssh_url": "git@gitlab.invalid:" + p.FullPath + ".git", "visibility_level": 0,
		},
		"project": map[string]any{
			"id": p.ID, "name": name, "description": "", "web_url": web, "avatar_url": nil,
			"git_ssh_url": "git@gitlab.invalid:" + p.FullPath + ".git", "git_http_url": web + ".git",
			"namespace": path.Base(ns), "visibility_level": 0, "path_with_namespace": p.FullPath,
			"default_branch": "main", "ci_config_path": "",
		},
		"environment": nil,
	}
}

func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}
