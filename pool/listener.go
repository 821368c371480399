package pool

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
)

// AgentHandler serves the guest agents' reports. Each report must carry the
// bearer token of the VM it names; anything else is refused.
func (m *Manager) AgentHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+agentproto.ReportPath, func(w http.ResponseWriter, r *http.Request) {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok {
			http.Error(w, "missing bearer token", http.StatusUnauthorized)
			return
		}
		var rep agentproto.Report
		if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&rep); err != nil {
			http.Error(w, "bad report: "+err.Error(), http.StatusBadRequest)
			return
		}
		if err := m.Report(tok, rep); err != nil {
			http.Error(w, err.Error(), http.StatusForbidden)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	return mux
}
