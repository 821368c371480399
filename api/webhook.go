package api

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"

	"github.com/nixos-fireactions/nixos-fireactions/forge"
	"github.com/nixos-fireactions/nixos-fireactions/httpguard"
)

// Default webhook bounds, for Options that set none (config.Limits sets
// them in serve).
const (
	defaultWebhookMaxBody = 1 << 20
	defaultWebhookBuffer  = 32 << 20
	hookChunk             = 32 << 10 // a body is read and budgeted in steps of this
)

// hookBudget is the memory all webhook bodies being read may hold at once.
type hookBudget struct {
	mu        sync.Mutex
	used, max int64
}

func (b *hookBudget) take(n int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.used+n > b.max {
		return false
	}
	b.used += n
	return true
}

func (b *hookBudget) give(n int64) {
	b.mu.Lock()
	b.used -= n
	b.mu.Unlock()
}

var (
	errHookTooLarge = errors.New("body too large")
	errHookBusy     = errors.New("too many webhook bodies in memory")
)

// readHook reads a delivery's body once, at most limit bytes, taking
// memory from the budget as it arrives: the buffer starts at one chunk
// (or the announced length, if smaller) and at most doubles once it is
// full, so a trickling or lying client holds about what it has sent.
// release gives the memory back once the delivery is done.
func (s *server) readHook(r *http.Request) (body []byte, release func(), err error) {
	limit := s.hookMax
	if r.ContentLength > limit {
		return nil, nil, errHookTooLarge // refused before a byte is read
	}
	var held int64
	release = func() { s.hookBudget.give(held) }
	size := int64(hookChunk)
	if r.ContentLength >= 0 {
		size = min(size, r.ContentLength+1) // +1: to see EOF without growing
	}
	if !s.hookBudget.take(size) {
		return nil, nil, errHookBusy
	}
	held = size
	buf := make([]byte, 0, size)
	for {
		if len(buf) == cap(buf) {
			if int64(len(buf)) > limit {
				release()
				return nil, nil, errHookTooLarge
			}
			next := min(2*int64(cap(buf)), limit+1)
			if cl := r.ContentLength; cl >= int64(len(buf)) && cl+1 <= next+hookChunk {
				next = cl + 1 // the announced end is near: one buffer for the rest
			}
			if !s.hookBudget.take(next) {
				release()
				return nil, nil, errHookBusy
			}
			nb := make([]byte, len(buf), next)
			copy(nb, buf)
			s.hookBudget.give(held)
			buf, held = nb, next
		}
		n, rerr := r.Body.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			release()
			return nil, nil, rerr
		}
	}
	if int64(len(buf)) > limit {
		release()
		return nil, nil, errHookTooLarge
	}
	return buf, release, nil
}

// webhook hands a delivery to its forge's receiver: the body read once,
// bounded (413 past the limit, 503 when the budget of all bodies in memory
// is spent), with the request; the receiver checks the signature or token
// before it decodes anything.
func (s *server) webhook(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("forge")
	recv, ok := s.hooks[name]
	if !ok || recv == nil {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no webhook receiver for forge %q", httpguard.Clip(name, 64)))
		return
	}
	body, release, err := s.readHook(r)
	switch {
	case errors.Is(err, errHookTooLarge):
		s.refused(r, "webhook body too large")
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body too large: the limit is %d bytes", s.hookMax))
		return
	case errors.Is(err, errHookBusy):
		s.refused(r, "webhook memory budget spent")
		w.Header().Set("Retry-After", "5")
		writeError(w, http.StatusServiceUnavailable, "too many deliveries in flight; retry later")
		return
	case err != nil:
		writeError(w, http.StatusBadRequest, "read body")
		return
	}
	defer release()
	recv.ServeWebhook(w, forge.WithBody(r, body), s.b.Kick)
}

// refused logs a refused request, clipped and at most one a second.
func (s *server) refused(r *http.Request, reason string) {
	if n, ok := s.refusals.Allow(); ok {
		s.log.Warn("api request refused", "method", httpguard.Clip(r.Method, 16), "path", httpguard.Clip(r.URL.Path, 128),
			"remote", r.RemoteAddr, "reason", reason, "refused_since_last_log", n)
	}
}
