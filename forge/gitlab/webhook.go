package gitlab

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync"

	gl "gitlab.com/gitlab-org/api/client-go/v2"

	"github.com/nixos-fireactions/nixos-fireactions/forge"
)

// maxWebhookBody bounds a delivery the API has not read already; the
// API's own limit is limits.webhook_max_body.
const maxWebhookBody = 25 << 20

// ServeWebhook implements forge.WebhookReceiver for GitLab project and
// group webhooks with job events, once per forge: the X-Gitlab-Token
// header must equal the configured secret (compared in constant time);
// other events are acknowledged and ignored. A job becoming pending is
// demand of every scope whose projects include the job's and that the
// project did not turn off (runnersoff.go): its tags, which
// the payload lacks, come from one GET /projects/:id/jobs/:job_id, made
// after the delivery is answered (GitLab times a webhook out, and
// disables one that keeps failing). A job leaving pending is demand gone.
// Redelivered events (same Idempotency-Key, or X-Gitlab-Event-UUID) are
// ignored.
func (d *Driver) ServeWebhook(w http.ResponseWriter, r *http.Request, kick func()) {
	got := sha256.Sum256([]byte(gl.HookEventToken(r)))
	if d.o.WebhookSecret == "" || subtle.ConstantTimeCompare(got[:], d.secret[:]) != 1 {
		http.Error(w, "invalid X-Gitlab-Token", http.StatusUnauthorized)
		return
	}
	d.mu.Lock()
	scopes := d.scopes
	d.mu.Unlock()
	if len(scopes) == 0 {
		http.Error(w, "no pool takes this forge's webhooks", http.StatusNotFound)
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
	if id != "" && !d.firstDelivery(id) {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	var concerned []*Forge
	for _, f := range scopes {
		if f.inScope(job) {
			concerned = append(concerned, f)
		}
	}
	if len(concerned) > 0 {
		d.applyJobEvent(job, concerned, kick)
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

// applyJobEvent updates the webhook view of pending jobs of the scopes
// the job concerns, and tells them (NotifyQueue) or kicks. It does not
// wait for GitLab: a job turning pending is looked up (for its tags,
// which the payload lacks) after the delivery is answered, once for every
// scope, by lookUp.
func (d *Driver) applyJobEvent(job *gl.JobEvent, scopes []*Forge, kick func()) {
	switch job.BuildStatus {
	case string(gl.Pending):
		d.lookUpLater(job, scopes, kick)
		return
	case string(gl.Created), string(gl.WaitingForResource), string(gl.Preparing):
		return // not yet waiting for a runner
	}
	d.mu.Lock()
	l := d.lookups[job.BuildID]
	d.mu.Unlock()
	if l != nil {
		// The job's lookup may have read it pending: it drops its
		// result, or, if it is making it demand already, is done with
		// that before the job is told gone here.
		l.mu.Lock()
		l.gone = true
		l.mu.Unlock()
	}
	changed := false
	for _, f := range scopes {
		f.mu.Lock()
		_, had := f.hooked[job.BuildID]
		delete(f.hooked, job.BuildID)
		told := f.tellLocked(forge.Job{ID: strconv.FormatInt(job.BuildID, 10)}, false)
		listens := f.notify != nil
		f.mu.Unlock()
		f.tell(told)
		changed = changed || (had && !listens)
	}
	if changed {
		kick()
	}
}

// maxLookups bounds the pending-job lookups in flight after their
// deliveries; a delivery beyond it is left to the next poll, which covers
// every project of every scope.
const maxLookups = 16

// lookup is one pending job's lookup in flight. gone is set when a
// delivery says the job left pending meanwhile: the lookup's answer,
// which may have been read before, is then stale and dropped. mu is held
// while the lookup makes the job demand, so that the job is told gone
// after it is told queued, never before.
type lookup struct {
	mu   sync.Mutex
	gone bool
}

// lookUpLater starts the lookup of a pending job in the background,
// unless one is in flight already (a redelivery under another key).
func (d *Driver) lookUpLater(job *gl.JobEvent, scopes []*Forge, kick func()) {
	d.mu.Lock()
	if d.lookups[job.BuildID] != nil || len(d.lookups) >= maxLookups {
		busy := len(d.lookups) >= maxLookups
		d.mu.Unlock()
		if busy {
			d.log.Warn("gitlab webhook: too many job lookups in flight; the next poll will see the job",
				"job", job.BuildID, "project", job.ProjectID)
		}
		return
	}
	l := &lookup{}
	d.lookups[job.BuildID] = l
	d.inFlight.Add(1)
	d.mu.Unlock()
	go func() {
		defer d.inFlight.Done()
		defer func() {
			d.mu.Lock()
			delete(d.lookups, job.BuildID)
			d.mu.Unlock()
		}()
		ctx, cancel := context.WithTimeout(context.Background(), d.o.RequestTimeout)
		defer cancel()
		d.lookUp(ctx, l, job, scopes, kick)
	}()
}

// lookUp reads the pending job (GET /projects/:id/jobs/:job_id, with the
// client's retries) and makes it demand of the scopes, unless a delivery
// said it left pending while it was read (l.gone).
func (d *Driver) lookUp(ctx context.Context, l *lookup, job *gl.JobEvent, scopes []*Forge, kick func()) {
	j, _, err := d.api.Jobs.GetJob(job.ProjectID, job.BuildID, gl.WithContext(ctx))
	if err != nil {
		// Without its tags the job cannot be routed; the next poll
		// will see it.
		d.log.Warn("gitlab webhook: look up pending job", "job", job.BuildID, "project", job.ProjectID, "err", err)
		kick()
		return
	}
	if j.Status != string(gl.Pending) {
		return
	}
	path := job.Project.PathWithNamespace
	fj := toJob(j.ID, j.TagList, path, j.CreatedAt)
	// Before l.mu: a delivery that the job left pending waits on it.
	scopes = d.servingScopes(ctx, job.ProjectID, path, scopes)
	l.mu.Lock()
	if l.gone {
		l.mu.Unlock()
		d.log.Info("gitlab webhook: job left pending during its lookup", "job", job.BuildID, "project", path)
		return
	}
	kicks := false
	served := 0
	for _, f := range scopes {
		f.mu.Lock()
		if f.polled.off[job.ProjectID] {
			// The project turned this scope's runners off (as of the
			// scope's last listing, or a poll since servingScopes):
			// GitLab gives the job to none of ours.
			f.mu.Unlock()
			continue
		}
		served++
		f.hooked[job.BuildID] = hookedJob{job: fj, project: job.ProjectID, at: f.o.Now()}
		told := f.tellLocked(fj, true)
		listens := f.notify != nil
		f.mu.Unlock()
		f.tell(told)
		kicks = kicks || !listens
	}
	l.mu.Unlock()
	d.log.Info("gitlab webhook: pending job", "job", job.BuildID, "project", path, "tags", j.TagList,
		"scopes", served)
	if kicks {
		kick()
	}
}

// recent remembers the last recentSize webhook deliveries.
type recent struct {
	keys []string
	set  map[string]bool
}

const recentSize = 1024

// firstDelivery records key and reports whether it is new.
func (d *Driver) firstDelivery(key string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := &d.seen
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
