package githubdouble

import (
	"encoding/json"
	"net/http"
	"sort"
	"strings"
	"time"
)

// Job is a workflow job as the double holds it.
type Job struct {
	ID         int64
	RunID      int64
	Repo       string
	Labels     []string
	Status     string // queued, in_progress, completed
	Conclusion string
	RunnerID   int64
	RunnerName string
}

// QueueJob starts a workflow run of one job in repo (OWNER/NAME) asking
// for labels, and delivers its queued webhook.
func (d *Double) QueueJob(repo string, labels ...string) Job {
	return d.QueueRun(repo, JobSpec{Labels: labels})[0]
}

// JobSpec is one job of a run QueueRun starts.
type JobSpec struct {
	Name   string // default "build"
	Labels []string
	// KillsRunner: the job breaks the runner that takes it, as a fork
	// bomb does: the stand-in runner says it runs the job, then exits
	// at once without reporting anything.
	KillsRunner bool
}

// QueueRun starts a workflow run of the jobs in repo (OWNER/NAME), all
// queued at once, and delivers their queued webhooks.
func (d *Double) QueueRun(repo string, jobs ...JobSpec) []Job {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := time.Now()
	r := &run{id: d.id(), repo: repo, status: "queued", created: now}
	d.runs[r.id] = r
	out := make([]Job, 0, len(jobs))
	for _, spec := range jobs {
		name := spec.Name
		if name == "" {
			name = "build"
		}
		j := &job{id: d.id(), runID: r.id, repo: repo, name: name, labels: spec.Labels, status: "queued", created: now,
			killsRunner: spec.KillsRunner}
		r.jobs = append(r.jobs, j.id)
		d.jobs[j.id] = j
		d.emit("queued", j)
		out = append(out, j.public())
	}
	d.ssAssign()
	d.notify()
	return out
}

func (j *job) public() Job {
	return Job{ID: j.id, RunID: j.runID, Repo: j.repo, Labels: append([]string(nil), j.labels...),
		Status: j.status, Conclusion: j.conclusion, RunnerID: j.runnerID, RunnerName: j.runnerName}
}

// Jobs lists every job, oldest first.
func (d *Double) Jobs() []Job {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]Job, 0, len(d.jobs))
	for _, j := range d.jobs {
		out = append(out, j.public())
	}
	sort.Slice(out, func(i, k int) bool { return out[i].ID < out[k].ID })
	return out
}

// SetJobStatus moves a job (and its run) to a status, as GitHub would
// when someone else's runner takes it or it is cancelled, and delivers
// the webhook.
func (d *Double) SetJobStatus(id int64, status, conclusion string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	j := d.jobs[id]
	if j == nil {
		return
	}
	d.moveJob(j, status, conclusion)
}

// moveJob changes a job's status, keeps its run's status in step and
// delivers the webhook. Callers hold d.mu.
func (d *Double) moveJob(j *job, status, conclusion string) {
	now := time.Now()
	j.status, j.conclusion = status, conclusion
	switch status {
	case "in_progress":
		j.started = now
	case "completed":
		j.completed = now
	}
	r := d.runs[j.runID]
	all, failed := true, false
	for _, id := range r.jobs {
		all = all && d.jobs[id].status == "completed"
		failed = failed || d.jobs[id].conclusion == "failure"
	}
	switch {
	case all:
		r.status, r.conclusion = "completed", "success"
		switch {
		case r.cancelling:
			r.conclusion = "cancelled"
		case failed:
			r.conclusion = "failure"
		}
	case status == "in_progress":
		r.status = "in_progress"
	}
	d.emit(status, j)
	d.ssJobMoved(j, status, conclusion)
	d.notify()
}

// runnerCovers reports whether a runner in scope s may take a job of repo.
func (d *Double) runnerCovers(s scopeKey, repo string) bool {
	owner, _, _ := strings.Cut(strings.ToLower(repo), "/")
	switch s.kind {
	case "repo":
		return s.name == strings.ToLower(repo)
	case "org":
		return s.name == owner
	case "enterprise":
		for _, o := range d.enterprises[s.name] {
			if o == owner {
				return true
			}
		}
	}
	return false
}

// labelsFit is GitHub's routing rule: every label the job asks for is one
// of the runner's, case-insensitively.
func labelsFit(want, have []string) bool {
	for _, w := range want {
		ok := false
		for _, h := range have {
			ok = ok || strings.EqualFold(w, h)
		}
		if !ok {
			return false
		}
	}
	return true
}

// RunnerReport is what a stand-in runner said when it finished its job:
// the JIT configuration it was given and what its process saw.
type RunnerReport struct {
	RunnerID   int64
	RunnerName string
	JobID      int64
	JIT        string
	Argv       []string
	Env        []string
	// Issued says whether JIT is exactly the configuration issued for
	// this runner.
	Issued bool
}

// OnAcquire sets a function told of each job a stand-in runner takes,
// before the runner hears of it (to act while the job runs).
func (d *Double) OnAcquire(f func(Job)) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.onAcquire = f
}

// Reports lists the stand-in runners' reports.
func (d *Double) Reports() []RunnerReport {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]RunnerReport(nil), d.reports...)
}

// acquireRequest and the rest are the stand-in runner protocol's bodies.
type acquireRequest struct {
	WaitMillis int `json:"wait_ms"`
}

type acquired struct {
	JobID       int64  `json:"job_id"`
	RunID       int64  `json:"run_id"`
	Name        string `json:"name"`
	Repo        string `json:"repository"`
	KillsRunner bool   `json:"kills_runner,omitempty"`
}

type completeRequest struct {
	JobID      int64    `json:"job_id"`
	Conclusion string   `json:"conclusion"`
	JIT        string   `json:"jit_config"`
	Argv       []string `json:"argv"`
	Env        []string `json:"env"`
}

// serveRunner is the stand-in runner protocol, which stands for the
// Actions service a real runner talks to (not part of the REST API).
func (d *Double) serveRunner(w http.ResponseWriter, r *http.Request, op string) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	secret, _ := strings.CutPrefix(r.Header.Get("Authorization"), "RunnerToken ")
	switch op {
	case "acquire":
		var req acquireRequest
		_ = json.NewDecoder(r.Body).Decode(&req)
		d.acquire(w, r, secret, time.Duration(min(max(req.WaitMillis, 0), 20000))*time.Millisecond)
	case "complete":
		var req completeRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, "bad body", http.StatusBadRequest)
			return
		}
		d.complete(w, secret, req)
	default:
		http.NotFound(w, r)
	}
}

func (d *Double) runnerBySecret(secret string) *runner {
	if secret == "" {
		return nil
	}
	return d.runners.bySecret[secret]
}

// acquire gives the runner the oldest queued job it may take, waiting for
// one up to wait.
func (d *Double) acquire(w http.ResponseWriter, r *http.Request, secret string, wait time.Duration) {
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	for {
		d.mu.Lock()
		rn := d.runnerBySecret(secret)
		if rn == nil {
			d.mu.Unlock()
			http.Error(w, "unknown runner", http.StatusUnauthorized)
			return
		}
		rn.status = "online"
		if j := d.assignable(rn); j != nil {
			j.runnerID, j.runnerName = rn.id, rn.name
			rn.busy, rn.job = true, j.id
			d.moveJob(j, "in_progress", "")
			a := acquired{JobID: j.id, RunID: j.runID, Name: j.name, Repo: j.repo, KillsRunner: j.killsRunner}
			taken, hook := j.public(), d.onAcquire
			d.mu.Unlock()
			if hook != nil {
				hook(taken)
			}
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(a)
			return
		}
		changed := d.changed
		d.mu.Unlock()
		select {
		case <-changed:
		case <-deadline.C:
			w.WriteHeader(http.StatusNoContent)
			return
		case <-r.Context().Done():
			return
		}
	}
}

// assignable is the oldest queued job the runner may take. Callers hold
// d.mu.
func (d *Double) assignable(rn *runner) *job {
	var best *job
	for _, j := range d.jobs {
		if j.status != "queued" || j.scaleSet != rn.scaleSet || !d.runnerCovers(rn.scope, j.repo) || !labelsFit(j.labels, rn.labels) {
			continue
		}
		if best == nil || j.id < best.id {
			best = j
		}
	}
	return best
}

// complete ends the runner's job with its report; the runner, ephemeral,
// is then removed, as GitHub removes ephemeral runners after their job.
func (d *Double) complete(w http.ResponseWriter, secret string, req completeRequest) {
	d.mu.Lock()
	defer d.mu.Unlock()
	rn := d.runnerBySecret(secret)
	if rn == nil || rn.job != req.JobID {
		http.Error(w, "not this runner's job", http.StatusConflict)
		return
	}
	d.reports = append(d.reports, RunnerReport{
		RunnerID: rn.id, RunnerName: rn.name, JobID: req.JobID, JIT: req.JIT,
		Argv: req.Argv, Env: req.Env, Issued: req.JIT == d.issued[rn.id].jit,
	})
	conclusion := req.Conclusion
	if conclusion == "" {
		conclusion = "success"
	}
	if d.runs[d.jobs[req.JobID].runID].cancelling {
		conclusion = "cancelled" // the runner stopped it when told to
	}
	d.moveJob(d.jobs[req.JobID], "completed", conclusion)
	d.runners.remove(rn.id)
	d.notify()
	w.WriteHeader(http.StatusOK)
}
