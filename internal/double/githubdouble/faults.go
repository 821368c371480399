package githubdouble

import (
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/internal/double/githubdouble/openapi"
)

// FaultKind is a way GitHub fails a call.
type FaultKind string

const (
	// FaultServerError answers 502 without acting.
	FaultServerError FaultKind = "5xx"
	// FaultTimeout holds the call without acting until the client gives
	// up (or Hang passes, then 504).
	FaultTimeout FaultKind = "timeout"
	// FaultLostAnswer acts, then holds the answer until the client gives
	// up: the client must not assume the call failed.
	FaultLostAnswer FaultKind = "lost-answer"
	// FaultSecondaryLimit answers 429 with Retry-After, as GitHub's
	// secondary rate limits do, without acting.
	FaultSecondaryLimit FaultKind = "429"
)

// Faults is the fault injection setting: each REST call fails with
// probability Rate, with one of Kinds picked at random.
type Faults struct {
	Rate  float64
	Kinds []FaultKind
	// Hang bounds how long a timeout holds a call; default 30s.
	Hang time.Duration
	// RetryAfter is the 429's Retry-After in seconds; default 1.
	RetryAfter int
	// Only limits faults to these operation ids; empty: every operation.
	Only []string
}

// AllFaults are every kind of fault.
var AllFaults = []FaultKind{FaultServerError, FaultTimeout, FaultLostAnswer, FaultSecondaryLimit}

// SetFaults replaces the fault injection setting; the zero value turns it
// off.
func (d *Double) SetFaults(f Faults) {
	if f.Hang == 0 {
		f.Hang = 30 * time.Second
	}
	if f.RetryAfter == 0 {
		f.RetryAfter = 1
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.faults = f
}

// FaultCounts is how many faults of each kind were injected.
func (d *Double) FaultCounts() map[FaultKind]int {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := map[FaultKind]int{}
	for k, v := range d.faultCount {
		out[k] = v
	}
	return out
}

// fault is the fault picked for one call; the zero value is none.
type fault struct {
	kind       FaultKind
	hang       time.Duration
	retryAfter int
}

// pickFault draws the fault for a call. Callers hold d.mu.
func (d *Double) pickFault(opID string) fault {
	f := d.faults
	if len(f.Only) > 0 && !slices.Contains(f.Only, opID) {
		return fault{}
	}
	if f.Rate <= 0 || len(f.Kinds) == 0 || d.rng.Float64() >= f.Rate {
		return fault{}
	}
	k := f.Kinds[d.rng.Intn(len(f.Kinds))]
	d.faultCount[k]++
	return fault{kind: k, hang: f.Hang, retryAfter: f.RetryAfter}
}

// before injects the faults that answer without acting; it reports
// whether it answered.
func (f fault) before(d *Double, w http.ResponseWriter, r *http.Request, op *openapi.Operation) bool {
	switch f.kind {
	case FaultServerError:
		d.logf("fault: 502 for %s %s", r.Method, r.URL.Path)
		d.sendChecked(w, op, http.StatusBadGateway, nil, basicError("Server Error"))
	case FaultSecondaryLimit:
		d.logf("fault: 429 for %s %s", r.Method, r.URL.Path)
		h := http.Header{}
		h.Set("Retry-After", strconv.Itoa(f.retryAfter))
		d.sendChecked(w, op, http.StatusTooManyRequests, h,
			basicError("You have exceeded a secondary rate limit. Please wait a few minutes before you try again."))
	case FaultTimeout:
		d.logf("fault: no answer for %s %s", r.Method, r.URL.Path)
		if f.wait(r) {
			d.sendChecked(w, op, http.StatusGatewayTimeout, nil, basicError("Timeout"))
		}
	default:
		return false
	}
	return true
}

// after injects the fault that acts and then loses the answer; it reports
// whether it took over the answer.
func (f fault) after(d *Double, r *http.Request, op *openapi.Operation) bool {
	if f.kind != FaultLostAnswer {
		return false
	}
	d.logf("fault: acted on %s %s, answer lost", r.Method, r.URL.Path)
	f.wait(r)
	return true
}

// wait holds the call until the client gives up or the hang passes; it
// reports whether the client is still there.
func (f fault) wait(r *http.Request) bool {
	t := time.NewTimer(f.hang)
	defer t.Stop()
	select {
	case <-r.Context().Done():
		return false
	case <-t.C:
		return true
	}
}

// sendChecked writes an answer the double makes up (not an operation's),
// holding it to the description too.
func (d *Double) sendChecked(w http.ResponseWriter, op *openapi.Operation, status int, h http.Header, body any) {
	rec := httptest.NewRecorder()
	for k, v := range h {
		rec.Header()[k] = v
	}
	writeJSON(rec, status, body)
	for _, e := range op.CheckResponse(rec.Code, rec.Header().Get("Content-Type"), rec.Body.Bytes()) {
		d.violation("response: %v", e)
	}
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	_, _ = w.Write(rec.Body.Bytes())
}
