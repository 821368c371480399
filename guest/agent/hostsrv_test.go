package agent

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
)

// hostServer stands in for the host's report listener.
type hostServer struct {
	*httptest.Server
	token string

	mu      sync.Mutex
	reports []agentproto.Report
	raw     []map[string]any
	fail    int // answer this many requests with 503 first
	hits    int
}

func newHostServer(t *testing.T, token string) *hostServer {
	h := &hostServer{token: token}
	h.Server = httptest.NewServer(http.HandlerFunc(h.serve))
	t.Cleanup(h.Close)
	return h
}

func (h *hostServer) serve(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.hits++
	if r.Method != http.MethodPost || r.URL.Path != agentproto.ReportPath {
		http.Error(w, "wrong method or path", http.StatusNotFound)
		return
	}
	if r.Header.Get("Authorization") != "Bearer "+h.token {
		http.Error(w, "bad token", http.StatusUnauthorized)
		return
	}
	if r.Header.Get("Content-Type") != "application/json" {
		http.Error(w, "not JSON", http.StatusUnsupportedMediaType)
		return
	}
	if h.fail > 0 {
		h.fail--
		http.Error(w, "try again", http.StatusServiceUnavailable)
		return
	}
	var raw map[string]any
	if err := json.NewDecoder(r.Body).Decode(&raw); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	b, _ := json.Marshal(raw)
	var rep agentproto.Report
	json.Unmarshal(b, &rep)
	h.raw = append(h.raw, raw)
	h.reports = append(h.reports, rep)
	w.WriteHeader(http.StatusNoContent)
}

func (h *hostServer) got() []agentproto.Report {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]agentproto.Report(nil), h.reports...)
}

func (h *hostServer) events() []agentproto.Event {
	var ev []agentproto.Event
	for _, r := range h.got() {
		ev = append(ev, r.Event)
	}
	return ev
}
