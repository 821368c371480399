// Package api is the orchestrator's HTTP API. It exists so operators and
// tools can see and steer a running `fireactions serve` without touching
// its state on disk: list pools and VMs, scale, pause and resume pools,
// kill a VM, delete a pool's demand source at its forge (a GitHub scale
// set), read or follow a VM's serial console, probe health and
// readiness, and deliver forge webhooks. It speaks JSON under /api/v1,
// and HTML at /status: a read-only page for people (pools, VMs, recent
// outcomes, boot-time and queue-wait charts) that fetches nothing.
//
// The same handler serves a unix socket, where the socket's file mode is
// the authentication, and optionally TCP (with TLS), where every request
// except the probes and webhooks needs a bearer token. Webhooks carry
// their own authentication, which each forge driver checks.
package api

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"log/slog"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/forge"
	"github.com/nixos-fireactions/nixos-fireactions/httpguard"
	"github.com/nixos-fireactions/nixos-fireactions/pool"
	"github.com/nixos-fireactions/nixos-fireactions/vmstate"
)

// Backend is what the API needs from the orchestrator; *pool.Manager
// satisfies it. Errors wrapping pool.ErrNotFound become 404.
type Backend interface {
	Pools() []pool.PoolStatus
	Pool(name string) (pool.PoolStatus, error)
	Scale(name string, minIdle, max *int) (pool.PoolStatus, error)
	SetPaused(name string, paused bool) (pool.PoolStatus, error)
	SortedVMs() []vmstate.Record
	VM(id string) (vmstate.Record, error)
	Kill(id string) error
	ConsoleLog(id string) (string, error)
	Ready() bool
	Kick()
	// DeleteDemandSource deletes the demand source a pool owns at its
	// forge (a GitHub runner scale set).
	DeleteDemandSource(ctx context.Context, pool string) error
}

// Options configure the handler.
type Options struct {
	Backend Backend
	// Webhooks are the forge webhook receivers by the name used in
	// /webhooks/{forge}.
	Webhooks map[string]forge.WebhookReceiver
	// Tokens are the accepted bearer tokens when a token is required.
	// Empty strings are ignored; with no token left every request that
	// needs one is refused.
	Tokens []string
	// Log receives request and error logs; nil discards them.
	Log *slog.Logger
	// WebhookMaxBody bounds one delivery's body (413 past it), and
	// WebhookBuffer all bodies being read at once (503 past it); 0 takes
	// 1 MiB and 32 MiB.
	WebhookMaxBody, WebhookBuffer int64
	// Insights feed the status page's outcomes and charts; nil leaves
	// them out.
	Insights Insights
	// Fleet lists the fleet's hosts on the status page; nil: this host
	// is in no fleet and the page has no fleet section.
	Fleet FleetView
}

// VMSummary is one line of GET /api/v1/vms.
type VMSummary struct {
	ID         string        `json:"id"`
	Pool       string        `json:"pool"`
	Phase      vmstate.Phase `json:"phase"`
	RunnerName string        `json:"runner_name,omitempty"`
	Address    string        `json:"address,omitempty"`
	AgeSeconds int64         `json:"age_seconds"`
	Created    time.Time     `json:"created"`
	PID        int           `json:"pid,omitempty"`
}

// Error is the body of every error response.
type Error struct {
	Error string `json:"error"`
}

// KillResponse is the body of a 202 answer to DELETE /api/v1/vms/{id}.
type KillResponse struct {
	ID     string `json:"id"`
	Status string `json:"status"` // "killing"
}

// ScaleRequest is the body of POST /api/v1/pools/{name}/scale; a field
// left out keeps its value.
type ScaleRequest struct {
	MinIdle *int `json:"min_idle,omitempty"`
	Max     *int `json:"max,omitempty"`
}

// Paths open without a token: probes (orchestrators poll them) and
// webhooks (each driver checks the forge's signature or token).
var openPatterns = map[string]bool{
	"/healthz":          true,
	"/readyz":           true,
	"/webhooks/{forge}": true,
}

// now is the clock for VM ages; tests replace it.
var now = time.Now

// NewHandler returns the API. When requireToken is true, every path but
// /healthz, /readyz and /webhooks/* needs "Authorization: Bearer <token>"
// with one of o.Tokens; on the unix socket pass false.
func NewHandler(o Options, requireToken bool) http.Handler {
	s := &server{b: o.Backend, hooks: o.Webhooks, log: o.Log, refusals: httpguard.NewEvery(time.Second),
		hookMax: o.WebhookMaxBody, hookBudget: &hookBudget{max: o.WebhookBuffer}, insights: o.Insights, fleet: o.Fleet}
	if s.hookMax <= 0 {
		s.hookMax = defaultWebhookMaxBody
	}
	if s.hookBudget.max <= 0 {
		s.hookBudget.max = max(defaultWebhookBuffer, s.hookMax)
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	for _, t := range o.Tokens {
		if t != "" {
			s.tokens = append(s.tokens, sha256.Sum256([]byte(t)))
		}
	}

	mux := http.NewServeMux()
	route := func(pattern string, ms methods) { mux.Handle(pattern, ms) }
	route("/api/v1/pools", methods{http.MethodGet: s.listPools})
	route("/api/v1/pools/{name}", methods{http.MethodGet: s.getPool})
	route("/api/v1/pools/{name}/scale", methods{http.MethodPost: s.scalePool})
	route("/api/v1/pools/{name}/pause", methods{http.MethodPost: s.pausePool(true)})
	route("/api/v1/pools/{name}/resume", methods{http.MethodPost: s.pausePool(false)})
	route("/api/v1/pools/{name}/demand-source", methods{http.MethodDelete: s.deleteDemandSource})
	route("/api/v1/vms", methods{http.MethodGet: s.listVMs})
	route("/api/v1/vms/{id}", methods{http.MethodGet: s.getVM, http.MethodDelete: s.killVM})
	route("/api/v1/vms/{id}/console", methods{http.MethodGet: s.console})
	route("/status", methods{http.MethodGet: s.status})
	route("/healthz", methods{http.MethodGet: s.healthz})
	route("/readyz", methods{http.MethodGet: s.readyz})
	route("/webhooks/{forge}", methods{http.MethodPost: s.webhook})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such endpoint: "+r.URL.Path)
	})

	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		// Decide on the pattern the mux will actually route to, not on
		// the raw path, so "/webhooks/../api/v1/vms" cannot slip past.
		_, pattern := mux.Handler(r)
		if requireToken && !openPatterns[pattern] && !s.authorized(r) {
			s.refused(r, "missing or invalid bearer token")
			w.Header().Set("WWW-Authenticate", "Bearer")
			writeError(w, http.StatusUnauthorized, "unauthorized: missing or invalid bearer token")
			return
		}
		mux.ServeHTTP(rec, r)
		s.log.Debug("api request", "method", httpguard.Clip(r.Method, 16), "path", httpguard.Clip(r.URL.Path, 128), "status", rec.status, "duration", time.Since(start), "remote", r.RemoteAddr)
	})
}

// server holds the handler's state.
type server struct {
	b      Backend
	hooks  map[string]forge.WebhookReceiver
	tokens [][sha256.Size]byte
	log    *slog.Logger
	// refusals rate-limits the logs of refused requests: anyone can
	// send them.
	refusals   *httpguard.Every
	hookMax    int64
	hookBudget *hookBudget
	insights   Insights
	fleet      FleetView
}

// authorized checks the bearer token against every accepted token in
// constant time. Both sides are hashed first, so neither the tokens'
// lengths nor which token matched shows in the timing.
func (s *server) authorized(r *http.Request) bool {
	h := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	tok = strings.TrimSpace(tok)
	if tok == "" {
		return false
	}
	got := sha256.Sum256([]byte(tok))
	match := 0
	for i := range s.tokens {
		match |= subtle.ConstantTimeCompare(got[:], s.tokens[i][:])
	}
	return match == 1
}

// methods routes one path by method and answers 405 with Allow for the
// others. HEAD is served by GET.
type methods map[string]http.HandlerFunc

func (ms methods) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h, ok := ms[r.Method]
	if !ok && r.Method == http.MethodHead {
		h, ok = ms[http.MethodGet]
	}
	if !ok {
		allow := make([]string, 0, len(ms)+1)
		for m := range ms {
			allow = append(allow, m)
			if m == http.MethodGet {
				allow = append(allow, http.MethodHead)
			}
		}
		sort.Strings(allow)
		w.Header().Set("Allow", strings.Join(allow, ", "))
		writeError(w, http.StatusMethodNotAllowed, "method "+r.Method+" not allowed; allowed: "+strings.Join(allow, ", "))
		return
	}
	h(w, r)
}

// statusRecorder remembers the status for the request log. Unwrap lets
// http.ResponseController reach the real writer (flushes, deadlines).
type statusRecorder struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (s *statusRecorder) WriteHeader(code int) {
	if !s.wrote {
		s.status, s.wrote = code, true
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	s.wrote = true
	return s.ResponseWriter.Write(b)
}

func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// Flush lets handlers that assert http.Flusher stream through the recorder.
func (s *statusRecorder) Flush() {
	_ = http.NewResponseController(s.ResponseWriter).Flush()
}
