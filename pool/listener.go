package pool

import (
	"context"
	"encoding/json"
	"errors"

	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
	"github.com/nixos-fireactions/nixos-fireactions/httpguard"
)

// maxReportBytes bounds one report's body.
const maxReportBytes = 64 << 10

// AgentHandler serves the guest agents' reports. Each report must carry the
// bearer token of the VM it names; anything else is refused (403), but
// for a VM not known while Recover still runs (503: the agent retries,
// and the VM may be adopted meanwhile). Answers never
// echo what the guest sent. The server around it (timeouts, connection
// caps per guest) is the caller's: see httpguard.
func (m *Manager) AgentHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+agentproto.ReportPath, func(w http.ResponseWriter, r *http.Request) {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok {
			http.Error(w, "missing bearer token", http.StatusUnauthorized)
			return
		}
		var rep agentproto.Report
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxReportBytes)).Decode(&rep); err != nil {
			var tooBig *http.MaxBytesError
			if errors.As(err, &tooBig) {
				http.Error(w, "report too large", http.StatusRequestEntityTooLarge)
				return
			}
			http.Error(w, "bad report", http.StatusBadRequest)
			return
		}
		if err := m.Report(tok, rep); err != nil {
			if errors.Is(err, ErrNotRecovered) {
				// The agent retries 5xx answers: its VM may be adopted yet.
				w.Header().Set("Retry-After", "1")
				http.Error(w, "recovery still runs; retry", http.StatusServiceUnavailable)
				return
			}
			http.Error(w, err.Error(), http.StatusForbidden)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	return mux
}

// What of a guest's reports reaches the host log: a guest is untrusted
// (a job may have root in it), so its text is clipped, each VM's reports
// are logged at INFO only the first time each known event comes (repeats
// and unknown events at DEBUG), and after maxLoggedReports lines nothing
// more of that VM's reports is logged at all, whatever the level.
const (
	maxLoggedReports = 64
	maxReportText    = 256  // bytes of a report's event or message in a log line
	maxReasonBytes   = 1024 // bytes of a failure message kept in the VM's record
)

// reportLog is one VM's report-logging budget.
type reportLog struct {
	mu     sync.Mutex
	n      int
	seen   map[agentproto.Event]bool
	drops  int
	dropAt time.Time
}

func (l *reportLog) log(log *slog.Logger, r agentproto.Report) {
	l.mu.Lock()
	l.n++
	n := l.n
	first := false
	if known(r.Event) && !l.seen[r.Event] {
		if l.seen == nil {
			l.seen = map[agentproto.Event]bool{}
		}
		l.seen[r.Event], first = true, true
	}
	l.mu.Unlock()
	if n > maxLoggedReports && !first {
		if n == maxLoggedReports+1 {
			log.Warn("agent: too many reports from this guest; no more of them are logged")
		}
		return
	}
	level := slog.LevelDebug
	if first {
		level = slog.LevelInfo
	}
	log.Log(context.Background(), level, "agent", "event", clipGuest(string(r.Event), maxReportText),
		"guest_uptime", r.Uptime.Round(time.Millisecond), "msg", clipGuest(r.Message, maxReportText))
}

// dropped logs a report the VM's queue had no room for: the first, then
// at most one a minute with the count.
func (l *reportLog) dropped(log *slog.Logger, r agentproto.Report) {
	l.mu.Lock()
	l.drops++
	now := time.Now()
	if !l.dropAt.IsZero() && now.Sub(l.dropAt) < time.Minute {
		l.mu.Unlock()
		return
	}
	drops := l.drops
	l.drops, l.dropAt = 0, now
	l.mu.Unlock()
	log.Warn("dropped agent reports: the guest sends faster than they are handled", "event", clipGuest(string(r.Event), maxReportText), "dropped", drops)
}

func known(e agentproto.Event) bool {
	switch e {
	case agentproto.EventBooted, agentproto.EventNetworkUp, agentproto.EventRunnerStarted,
		agentproto.EventRunnerReady, agentproto.EventJobStarted, agentproto.EventRunnerExited, agentproto.EventFailed:
		return true
	}
	return false
}

// clipGuest bounds guest text.
func clipGuest(s string, n int) string { return httpguard.Clip(s, n) }
