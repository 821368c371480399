package api

import (
	"net/http"
	"strings"
	"testing"
)

// Issue 14 item 15: the API refuses a scale no host could run, before it
// reaches the pool.
func TestScaleBound(t *testing.T) {
	for _, body := range []string{`{"max": 100000}`, `{"min_idle": 100000, "max": 100000}`, `{"max": 9223372036854775807}`} {
		h, b, _ := newTestHandler(t, false)
		w := do(h, "POST", "/api/v1/pools/small/scale", body, nil)
		if w.Code != http.StatusBadRequest {
			t.Fatalf("%s: status %d, want 400; body %s", body, w.Code, w.Body)
		}
		if msg := errorMessage(t, w); !strings.Contains(msg, "100000 is more than 4096") && !strings.Contains(msg, "is more than 4096") {
			t.Errorf("%s: error %q does not state the bound", body, msg)
		}
		p, _ := b.Pool("small")
		if p.Max >= 100000 {
			t.Errorf("%s: the backend was scaled to max %d", body, p.Max)
		}
	}
	h, _, _ := newTestHandler(t, false)
	if w := do(h, "POST", "/api/v1/pools/small/scale", `{"max": 4096}`, nil); w.Code != http.StatusOK {
		t.Errorf("max 4096: status %d, want 200; body %s", w.Code, w.Body)
	}
}
