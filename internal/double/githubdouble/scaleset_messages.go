package githubdouble

import (
	"encoding/json"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"
)

// messageQueue serves a session's queue: GET {sid} long-polls, DELETE
// {sid}/{messageId} acknowledges. The session's own token is required.
func (d *Double) messageQueue(r *http.Request, path string) (int, any) {
	sid, msgID, _ := strings.Cut(path, "/")
	tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	deadline := time.Now().Add(d.messageWait())
	for {
		d.mu.Lock()
		s, ses := d.sessionByID(sid)
		switch {
		case ses == nil:
			d.mu.Unlock()
			return http.StatusNotFound, exception("MessageSessionNotFoundException", "session "+sid+" not found")
		case tok != ses.token || time.Now().After(ses.tokenExpires):
			d.mu.Unlock()
			return http.StatusUnauthorized, exception("VssUnauthorizedException", "message queue token expired")
		}
		ses.lastPoll = time.Now()
		if r.Method == http.MethodDelete {
			id, _ := strconv.ParseInt(msgID, 10, 64)
			if ses.unacked != nil && ses.unacked.id == id {
				ses.unacked = nil
			}
			d.mu.Unlock()
			return http.StatusNoContent, nil
		}
		if r.Method != http.MethodGet || msgID != "" {
			d.mu.Unlock()
			return http.StatusNotFound, exception("NotFoundException", "no such API")
		}
		if c, err := strconv.Atoi(r.Header.Get("X-ScaleSetMaxCapacity")); err == nil && c != s.maxCapacity {
			s.maxCapacity = c
			d.ssAssign()
		}
		last, _ := strconv.ParseInt(r.URL.Query().Get("lastMessageId"), 10, 64)
		if ses.unacked != nil && last >= ses.unacked.id {
			ses.unacked = nil // handled: a later id was given
		}
		if ses.unacked == nil && len(ses.outbox) > 0 {
			n := min(len(ses.outbox), 50)
			ses.unacked = &ssMessage{id: d.id(), body: ses.outbox[:n]}
			ses.outbox = append([]map[string]any(nil), ses.outbox[n:]...)
		}
		if m := ses.unacked; m != nil {
			b, _ := json.Marshal(m.body)
			out := map[string]any{"messageId": m.id, "messageType": "RunnerScaleSetJobMessages", "body": string(b), "statistics": d.ssStats(s)}
			d.mu.Unlock()
			return http.StatusOK, out
		}
		changed := d.changed
		d.mu.Unlock()
		wait := time.Until(deadline)
		if wait <= 0 {
			return http.StatusAccepted, nil
		}
		t := time.NewTimer(wait)
		select {
		case <-changed:
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return http.StatusAccepted, nil
		}
		t.Stop()
	}
}

func (d *Double) sessionByID(sid string) (*scaleSet, *ssSession) {
	for _, s := range d.ss.sets {
		if ses := d.liveSession(s); ses != nil && ses.id == sid {
			return s, ses
		}
	}
	return nil, nil
}

// ssAssign gives each queued, unassigned job to one scale set that may
// take it (see the package's notes). Callers hold d.mu.
func (d *Double) ssAssign() {
	if len(d.ss.sets) == 0 {
		return
	}
	var queued []*job
	for _, j := range d.jobs {
		if j.status == "queued" && j.scaleSet == 0 {
			queued = append(queued, j)
		}
	}
	sort.Slice(queued, func(a, b int) bool { return queued[a].id < queued[b].id })
	for _, j := range queued {
		var best *scaleSet
		bestN := 0
		for _, s := range d.sortedSets() {
			if d.liveSession(s) == nil || !d.runnerCovers(s.scope, j.repo) || !labelsFit(j.labels, s.labels) {
				continue
			}
			n := d.ssStats(s)["totalAssignedJobs"]
			if n >= s.maxCapacity {
				continue
			}
			if best == nil || n < bestN {
				best, bestN = s, n
			}
		}
		if best == nil {
			continue
		}
		j.scaleSet, j.everSet = best.id, best.id
		d.ssTell(best, j, "JobAssigned", nil)
	}
	d.notify()
}

// ssJobMoved tells a job's scale set that it started or ended. Callers
// hold d.mu.
func (d *Double) ssJobMoved(j *job, status, conclusion string) {
	s := d.ss.sets[j.scaleSet]
	if s == nil {
		return
	}
	var runner map[string]any
	if rn := d.runners.byID[j.runnerID]; rn != nil || j.runnerID != 0 {
		runner = map[string]any{"runnerId": j.runnerID, "runnerName": j.runnerName}
	}
	switch status {
	case "in_progress":
		d.ssTell(s, j, "JobStarted", runner)
	case "completed":
		if runner == nil {
			runner = map[string]any{}
		}
		runner["result"] = conclusion
		d.ssTell(s, j, "JobCompleted", runner)
		d.ssAssign()
	}
}

// ssTell queues a job message for the scale set's session.
func (d *Double) ssTell(s *scaleSet, j *job, typ string, extra map[string]any) {
	ses := d.liveSession(s)
	if ses == nil {
		return
	}
	m := map[string]any{"messageType": typ, "runnerRequestId": j.id, "repositoryName": j.repo[strings.Index(j.repo, "/")+1:],
		"ownerName": j.repo[:max(strings.Index(j.repo, "/"), 0)], "jobId": strconv.FormatInt(j.id, 10), "jobDisplayName": j.name,
		"workflowRunId": j.runID, "eventName": "push", "requestLabels": j.labels, "queueTime": j.created}
	for k, v := range extra {
		m[k] = v
	}
	ses.outbox = append(ses.outbox, m)
}
