package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/config"
	"github.com/nixos-fireactions/nixos-fireactions/forge"
	"github.com/nixos-fireactions/nixos-fireactions/pool"
)

const (
	maxScaleBody = 64 << 10
)

func (s *server) listPools(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.b.Pools())
}

func (s *server) getPool(w http.ResponseWriter, r *http.Request) {
	st, err := s.b.Pool(r.PathValue("name"))
	if err != nil {
		s.backendError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

func (s *server) scalePool(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	var req ScaleRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxScaleBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		var tooBig *http.MaxBytesError
		switch {
		case errors.As(err, &tooBig):
			writeError(w, http.StatusRequestEntityTooLarge, "body too large")
		case errors.Is(err, io.EOF):
			writeError(w, http.StatusBadRequest, `empty body: want {"min_idle": N, "max": M}`)
		default:
			writeError(w, http.StatusBadRequest, "invalid JSON body: "+err.Error())
		}
		return
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		writeError(w, http.StatusBadRequest, "invalid JSON body: data after the object")
		return
	}
	if req.MinIdle == nil && req.Max == nil {
		writeError(w, http.StatusBadRequest, "nothing to change: give min_idle and/or max")
		return
	}
	// The configuration's bound on a pool's max (config.MaxPoolVMs), so a
	// client cannot ask for more VMs than a pool may have in the file.
	for _, v := range []struct {
		key string
		n   *int
	}{{"min_idle", req.MinIdle}, {"max", req.Max}} {
		if v.n != nil && *v.n > config.MaxPoolVMs {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("%s: %d is more than %d, the most one pool may have", v.key, *v.n, config.MaxPoolVMs))
			return
		}
	}
	st, err := s.b.Scale(name, req.MinIdle, req.Max)
	if err != nil {
		if errors.Is(err, pool.ErrNotFound) {
			s.backendError(w, r, err)
		} else {
			writeError(w, http.StatusBadRequest, err.Error())
		}
		return
	}
	s.log.Info("pool scaled through the API", "pool", name, "min_idle", st.MinIdle, "max", st.Max, "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, st)
}

func (s *server) pausePool(paused bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		st, err := s.b.SetPaused(name, paused)
		if err != nil {
			s.backendError(w, r, err)
			return
		}
		s.log.Info("pool paused through the API", "pool", name, "paused", paused, "remote", r.RemoteAddr)
		writeJSON(w, http.StatusOK, st)
	}
}

// deleteDemandSource is DELETE /api/v1/pools/{name}/demand-source: 204
// once deleted, 409 when the pool owns none.
func (s *server) deleteDemandSource(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Minute)
	defer cancel()
	if err := s.b.DeleteDemandSource(ctx, name); err != nil {
		if errors.Is(err, forge.ErrNoDemandSource) {
			writeError(w, http.StatusConflict, err.Error())
			return
		}
		s.backendError(w, r, err)
		return
	}
	s.log.Info("a pool's demand source deleted through the API", "pool", name, "remote", r.RemoteAddr)
	w.WriteHeader(http.StatusNoContent)
}

func (s *server) listVMs(w http.ResponseWriter, r *http.Request) {
	recs := s.b.SortedVMs()
	t := now()
	out := make([]VMSummary, 0, len(recs))
	for _, rec := range recs {
		var age int64
		if !rec.Created.IsZero() {
			age = max(0, int64(t.Sub(rec.Created).Seconds()))
		}
		out = append(out, VMSummary{
			ID: rec.ID, Pool: rec.Pool, Phase: rec.Phase, RunnerName: rec.RunnerName,
			Address: rec.Address, AgeSeconds: age, Created: rec.Created, PID: rec.PID,
		})
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *server) getVM(w http.ResponseWriter, r *http.Request) {
	rec, err := s.b.VM(r.PathValue("id"))
	if err != nil {
		s.backendError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, rec)
}

func (s *server) killVM(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := s.b.Kill(id); err != nil {
		s.backendError(w, r, err)
		return
	}
	s.log.Info("vm killed through the API", "vm", id, "remote", r.RemoteAddr)
	writeJSON(w, http.StatusAccepted, KillResponse{ID: id, Status: "killing"})
}

func (s *server) healthz(w http.ResponseWriter, r *http.Request) {
	writeText(w, http.StatusOK, "ok\n")
}

func (s *server) readyz(w http.ResponseWriter, r *http.Request) {
	if !s.b.Ready() {
		writeText(w, http.StatusServiceUnavailable, "not ready\n")
		return
	}
	writeText(w, http.StatusOK, "ok\n")
}

// backendError maps a Backend error: not found is 404, anything else 500.
func (s *server) backendError(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, pool.ErrNotFound) {
		writeError(w, http.StatusNotFound, err.Error())
		return
	}
	s.log.Error("api request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	writeError(w, http.StatusInternalServerError, err.Error())
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		status = http.StatusInternalServerError
		buf.Reset()
		_ = json.NewEncoder(&buf).Encode(Error{Error: "encode response: " + err.Error()})
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, Error{Error: msg})
}

func writeText(w http.ResponseWriter, status int, body string) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, body)
}
