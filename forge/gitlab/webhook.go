package gitlab

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"net/http"
	"strings"
	"time"

	gl "gitlab.com/gitlab-org/api/client-go/v2"

	"github.com/nixos-fireactions/nixos-fireactions/forge"
)

// maxWebhookBody bounds a delivery the API has not read already; the
// API's own limit is limits.webhook_max_body.
const maxWebhookBody = 25 << 20

// ServeWebhook implements forge.WebhookReceiver for GitLab project and
// group webhooks with job events. The X-Gitlab-Token header must equal the
// configured secret (compared in constant time); other events are
// acknowledged and ignored. A job becoming pending is demand: its tags,
// which the payload lacks, come from GET /projects/:id/jobs/:job_id. A job
// leaving pending is demand gone. Redelivered events (same
// Idempotency-Key, or X-Gitlab-Event-UUID) are ignored.
func (f *Forge) ServeWebhook(w http.ResponseWriter, r *http.Request, kick func()) {
	got := sha256.Sum256([]byte(gl.HookEventToken(r)))
	if f.o.WebhookSecret == "" || subtle.ConstantTimeCompare(got[:], f.secret[:]) != 1 {
		http.Error(w, "invalid X-Gitlab-Token", http.StatusUnauthorized)
		return
	}
	if typ := gl.HookEventType(r); typ != gl.EventTypeJob {
		w.WriteHeader(http.StatusNoContent) // not an event the pools care about
		return
	}
	id := deliveryID(r)
	if len(id) > forge.MaxDeliveryID {
		// Never kept: GitLab's keys are UUIDs.
		http.Error(w, "delivery id too long", http.StatusBadRequest)
		return
	}
	body, err := forge.Body(r, maxWebhookBody)
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(w, "read body", http.StatusBadRequest)
		return
	}
	ev, err := gl.ParseWebhook(gl.EventTypeJob, body)
	job, ok := ev.(*gl.JobEvent)
	if err != nil || !ok || job.BuildID == 0 {
		http.Error(w, "not a job event", http.StatusBadRequest)
		return
	}
	if id != "" && !f.firstDelivery(id) {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	if !f.inScope(job) {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	if f.applyJobEvent(r.Context(), job) {
		kick()
	}
	w.WriteHeader(http.StatusNoContent)
}

// deliveryID identifies a delivery across GitLab's retries: the
// Idempotency-Key, or else the event's UUID.
func deliveryID(r *http.Request) string {
	if k := r.Header.Get("Idempotency-Key"); k != "" {
		return k
	}
	return r.Header.Get("X-Gitlab-Event-UUID")
}

// inScope reports whether the job's project belongs to the scope.
func (f *Forge) inScope(job *gl.JobEvent) bool {
	path := job.Project.PathWithNamespace
	switch f.o.Scope.Kind {
	case ScopeProject:
		f.mu.Lock()
		id := f.scopeID
		f.mu.Unlock()
		return (id != 0 && job.ProjectID == id) || path == f.o.Scope.Path
	case ScopeGroup:
		return strings.HasPrefix(path, f.o.Scope.Path+"/")
	}
	return true
}

// applyJobEvent updates the webhook view of pending jobs and reports
// whether demand changed.
func (f *Forge) applyJobEvent(ctx context.Context, job *gl.JobEvent) bool {
	switch job.BuildStatus {
	case string(gl.Pending):
		lctx, cancel := context.WithTimeout(ctx, min(f.o.RequestTimeout, 10*time.Second))
		defer cancel()
		j, _, err := f.api.Jobs.GetJob(job.ProjectID, job.BuildID, gl.WithContext(lctx))
		if err != nil {
			// Without its tags the job cannot be routed; the next poll
			// will see it if it covers the project.
			f.log.Warn("gitlab webhook: look up pending job", "job", job.BuildID, "project", job.ProjectID, "err", err)
			return true
		}
		if j.Status != string(gl.Pending) {
			return false
		}
		path := job.Project.PathWithNamespace
		f.mu.Lock()
		f.hooked[job.BuildID] = hookedJob{job: toJob(j.ID, j.TagList, path, j.CreatedAt), project: job.ProjectID, at: f.o.Now()}
		f.mu.Unlock()
		f.log.Info("gitlab webhook: pending job", "job", job.BuildID, "project", path, "tags", j.TagList)
		return true
	case string(gl.Created), string(gl.WaitingForResource), string(gl.Preparing):
		return false // not yet waiting for a runner
	}
	f.mu.Lock()
	_, had := f.hooked[job.BuildID]
	delete(f.hooked, job.BuildID)
	f.mu.Unlock()
	return had
}

// recent remembers the last recentSize webhook deliveries.
type recent struct {
	keys []string
	set  map[string]bool
}

const recentSize = 1024

// firstDelivery records key and reports whether it is new.
func (f *Forge) firstDelivery(key string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := &f.seen
	if s.set == nil {
		s.set = map[string]bool{}
	}
	if s.set[key] {
		return false
	}
	s.set[key] = true
	s.keys = append(s.keys, key)
	if len(s.keys) > recentSize {
		delete(s.set, s.keys[0])
		s.keys = s.keys[1:]
	}
	return true
}
