package githubdouble

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

func (s *scaleSet) json(d *Double) map[string]any {
	labels := make([]any, len(s.labels))
	for i, l := range s.labels {
		labels[i] = map[string]any{"type": "System", "name": l}
	}
	return map[string]any{"id": s.id, "name": s.name, "runnerGroupId": s.group, "runnerGroupName": s.groupName,
		"labels": labels, "RunnerSetting": map[string]any{"disableUpdate": true}, "statistics": d.ssStats(s)}
}

// ssStats are a scale set's statistics now. Callers hold d.mu.
func (d *Double) ssStats(s *scaleSet) map[string]int {
	st := map[string]int{"totalAvailableJobs": 0, "totalAcquiredJobs": 0, "totalAssignedJobs": 0, "totalRunningJobs": 0,
		"totalRegisteredRunners": 0, "totalBusyRunners": 0, "totalIdleRunners": 0}
	for _, j := range d.jobs {
		if j.scaleSet == s.id && j.status != "completed" {
			st["totalAssignedJobs"]++
			if j.status == "in_progress" {
				st["totalRunningJobs"]++
			}
		}
	}
	for _, r := range d.runners.byID {
		if r.scaleSet == s.id {
			st["totalRegisteredRunners"]++
			if r.busy {
				st["totalBusyRunners"]++
			} else {
				st["totalIdleRunners"]++
			}
		}
	}
	return st
}

// ssScaleSets serves _apis/runtime/runnerscalesets[/ID[/...]].
func (d *Double) ssScaleSets(method string, sc scopeKey, rest []string, q url.Values, in map[string]any) (int, any) {
	if len(rest) == 0 {
		switch method {
		case http.MethodGet:
			var out []any
			for _, s := range d.sortedSets() {
				if s.scope == sc && s.name == q.Get("name") && strconv.FormatInt(s.group, 10) == q.Get("runnerGroupId") {
					out = append(out, s.json(d))
				}
			}
			return http.StatusOK, map[string]any{"count": len(out), "value": nonNil(out)}
		case http.MethodPost:
			return d.ssCreate(sc, in)
		}
		return http.StatusMethodNotAllowed, exception("ArgumentException", method)
	}
	id, _ := strconv.ParseInt(rest[0], 10, 64)
	s := d.ss.sets[id]
	if s == nil || s.scope != sc {
		return http.StatusNotFound, exception("RunnerScaleSetNotFoundException", fmt.Sprintf("scale set %d not found", id))
	}
	switch {
	case len(rest) == 1 && method == http.MethodGet:
		return http.StatusOK, s.json(d)
	case len(rest) == 1 && method == http.MethodPatch:
		if n, ok := in["name"].(string); ok && n != "" {
			s.name = n
		}
		if l := labelsOf(in); l != nil {
			s.labels = l
		}
		if g, ok := in["runnerGroupId"].(float64); ok && g > 0 {
			s.group = int64(g)
		}
		d.ssAssign()
		return http.StatusOK, s.json(d)
	case len(rest) == 1 && method == http.MethodDelete:
		d.ssDelete(s)
		return http.StatusNoContent, nil
	case len(rest) == 2 && rest[1] == "sessions" && method == http.MethodPost:
		return d.ssCreateSession(s, in)
	case len(rest) == 3 && rest[1] == "sessions":
		ses := d.liveSession(s)
		if ses == nil || ses.id != rest[2] {
			return http.StatusNotFound, exception("MessageSessionNotFoundException", "session not found")
		}
		switch method {
		case http.MethodDelete:
			s.session = nil
			d.ssAssign()
			return http.StatusNoContent, nil
		case http.MethodPatch:
			ses.token, ses.tokenExpires, ses.lastPoll = "mq-"+randomHex(16), time.Now().Add(d.adminTTL()), time.Now()
			return http.StatusOK, d.sessionJSON(s, ses)
		}
	case len(rest) == 2 && rest[1] == "generatejitconfig" && method == http.MethodPost:
		return d.ssJIT(s, in)
	}
	return http.StatusNotFound, exception("NotFoundException", "no such API")
}

func labelsOf(in map[string]any) []string {
	raw, ok := in["labels"].([]any)
	if !ok {
		return nil
	}
	out := []string{}
	for _, l := range raw {
		if m, ok := l.(map[string]any); ok {
			if n, ok := m["name"].(string); ok && n != "" {
				out = append(out, n)
			}
		}
	}
	return out
}

func (d *Double) ssCreate(sc scopeKey, in map[string]any) (int, any) {
	name, _ := in["name"].(string)
	if name == "" {
		return http.StatusBadRequest, exception("ArgumentException", "name is required")
	}
	gid := int64(1)
	if g, ok := in["runnerGroupId"].(float64); ok && g > 0 {
		gid = int64(g)
	}
	var grp *group
	for _, g := range d.ssGroupsOf(sc) {
		if g.id == gid {
			grp = g
		}
	}
	if grp == nil {
		return http.StatusNotFound, exception("RunnerGroupNotFoundException", fmt.Sprintf("runner group %d not found", gid))
	}
	for _, s := range d.ss.sets {
		if s.scope == sc && s.group == gid && strings.EqualFold(s.name, name) {
			return http.StatusConflict, exception("RunnerScaleSetExistsException", "a scale set named "+name+" exists in the group")
		}
	}
	s := &scaleSet{id: d.id(), name: name, scope: sc, group: gid, groupName: grp.name, labels: labelsOf(in)}
	if s.labels == nil {
		s.labels = []string{name}
	}
	d.ss.sets[s.id] = s
	return http.StatusOK, s.json(d)
}

// ssDelete removes a scale set: its jobs not started go back to the
// queue, its idle runners go.
func (d *Double) ssDelete(s *scaleSet) {
	for _, j := range d.jobs {
		if j.scaleSet == s.id && j.status == "queued" {
			j.scaleSet = 0
		}
	}
	for id, r := range d.runners.byID {
		if r.scaleSet == s.id && !r.busy {
			d.runners.remove(id)
		}
	}
	delete(d.ss.sets, s.id)
	d.ssAssign()
	d.notify()
}

func (d *Double) sessionJSON(s *scaleSet, ses *ssSession) map[string]any {
	return map[string]any{"sessionId": ses.id, "ownerName": ses.owner, "runnerScaleSet": s.json(d),
		"messageQueueUrl": d.ss.base + "/_actions/_msgqueue/" + ses.id, "messageQueueAccessToken": ses.token, "statistics": d.ssStats(s)}
}

func (d *Double) ssCreateSession(s *scaleSet, in map[string]any) (int, any) {
	if d.liveSession(s) != nil {
		return http.StatusConflict, exception("RunnerScaleSetSessionConflictException",
			fmt.Sprintf("the scale set %s already has an active session for owner %s", s.name, s.session.owner))
	}
	owner, _ := in["ownerName"].(string)
	ses := &ssSession{id: newUUID(), owner: owner, token: "mq-" + randomHex(16), tokenExpires: time.Now().Add(d.adminTTL()), lastPoll: time.Now()}
	s.session = ses
	return http.StatusOK, d.sessionJSON(s, ses)
}

func newUUID() string {
	h := randomHex(16)
	return h[0:8] + "-" + h[8:12] + "-4" + h[13:16] + "-a" + h[17:20] + "-" + h[20:32]
}

func (d *Double) ssJIT(s *scaleSet, in map[string]any) (int, any) {
	name, _ := in["name"].(string)
	if name == "" {
		return http.StatusBadRequest, exception("ArgumentException", "name is required")
	}
	if d.runners.named(s.scope, name) != nil {
		return http.StatusConflict, exception("AgentExistsException", "a runner named "+name+" exists")
	}
	r := &runner{id: d.id(), name: name, scope: s.scope, labels: append([]string(nil), s.labels...), group: s.group,
		status: "offline", secret: "runner-secret-" + randomHex(16), scaleSet: s.id}
	jit := d.encodeJIT(r)
	d.runners.add(r)
	d.issued[r.id] = issuedRunner{name: name, jit: jit, secret: r.secret}
	d.notify()
	return http.StatusOK, map[string]any{"runner": map[string]any{"id": r.id, "name": r.name, "runnerScaleSetId": s.id}, "encodedJITConfig": jit}
}

// ssAgents serves _apis/distributedtask/pools/0/agents[/ID].
func (d *Double) ssAgents(method string, sc scopeKey, rest []string, q url.Values) (int, any) {
	ref := func(r *runner) map[string]any {
		return map[string]any{"id": r.id, "name": r.name, "runnerScaleSetId": r.scaleSet}
	}
	if len(rest) == 0 && method == http.MethodGet {
		var out []any
		if r := d.runners.named(sc, q.Get("agentName")); r != nil {
			out = append(out, ref(r))
		}
		return http.StatusOK, map[string]any{"count": len(out), "value": nonNil(out)}
	}
	if len(rest) != 1 {
		return http.StatusNotFound, exception("NotFoundException", "no such API")
	}
	id, _ := strconv.ParseInt(rest[0], 10, 64)
	r := d.runners.byID[id]
	if r == nil || r.scope != sc {
		return http.StatusNotFound, exception("AgentNotFoundException", fmt.Sprintf("runner %d not found", id))
	}
	switch method {
	case http.MethodGet:
		return http.StatusOK, ref(r)
	case http.MethodDelete:
		if r.busy {
			return http.StatusBadRequest, exception("JobStillRunningException", "the runner is running a job")
		}
		d.runners.remove(id)
		d.notify()
		return http.StatusNoContent, nil
	}
	return http.StatusNotFound, exception("NotFoundException", "no such API")
}
