package forge

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/httpguard"
)

// Answer writes a webhook endpoint's answer: the status and one line of
// text.
func Answer(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, msg+"\n")
}

// Verifier reads a forge's webhook deliveries and checks their
// signature, so that nothing of an unsigned one is parsed or kept: the
// bytes are an attacker's until then.
type Verifier struct {
	Kind     string // the driver's kind, in the log
	IDHeader string // the header holding the delivery id
	Limit    int64  // the largest body read (the API's own limit is lower)
	// Signed checks the delivery's signature header against the body, in
	// constant time.
	Signed   func(h http.Header, body []byte) bool
	Log      *slog.Logger
	refusals *httpguard.Every // logs of refused deliveries, one a second
	once     sync.Once
}

// Read returns the delivery's id and its signed body. When it cannot (an
// id too long: 400, a body too large: 413, unreadable: 400, a signature
// that does not match: 401, logged at most once a second and clipped) it
// answers itself and returns false.
func (v *Verifier) Read(w http.ResponseWriter, r *http.Request) (id string, body []byte, ok bool) {
	id = r.Header.Get(v.IDHeader)
	if len(id) > MaxDeliveryID {
		// Never kept nor logged whole: the forges' ids are UUIDs.
		Answer(w, http.StatusBadRequest, "delivery id too long")
		return "", nil, false
	}
	body, err := Body(r, v.Limit)
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			Answer(w, http.StatusRequestEntityTooLarge, "body too large")
		} else {
			Answer(w, http.StatusBadRequest, "read body")
		}
		return "", nil, false
	}
	if !v.Signed(r.Header, body) {
		v.once.Do(func() { v.refusals = httpguard.NewEvery(time.Second) })
		if n, ok := v.refusals.Allow(); ok {
			v.Log.Warn(v.Kind+" webhook refused: bad signature", "delivery", httpguard.Clip(id, 64),
				"remote", r.RemoteAddr, "refused_since_last_log", n)
		}
		Answer(w, http.StatusUnauthorized, "signature does not match")
		return "", nil, false
	}
	return id, body, true
}

// SignedSHA256 reports, in constant time, whether hexSum is the hex
// HMAC-SHA256 of body with secret (GitHub's X-Hub-Signature-256 after
// its "sha256=", Gitea's X-Gitea-Signature).
func SignedSHA256(secret, hexSum string, body []byte) bool {
	got, err := hex.DecodeString(hexSum)
	if err != nil || len(got) != sha256.Size {
		return false
	}
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return hmac.Equal(got, m.Sum(nil))
}

// Retained is those of scopes that are in inUse, looking through
// wrappers (Unwrap): what a Driver's Retain keeps.
func Retained[S interface {
	Forge
	comparable
}](scopes []S, inUse []Forge) []S {
	keep := make(map[Forge]bool, len(inUse))
	for _, f := range inUse {
		keep[Unwrap(f)] = true
	}
	var out []S
	for _, s := range scopes {
		if keep[s] {
			out = append(out, s)
		}
	}
	return out
}
