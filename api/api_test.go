package api

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/forge"
	"github.com/nixos-fireactions/nixos-fireactions/pool"
	"github.com/nixos-fireactions/nixos-fireactions/vmstate"
)

var testNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func fixClock(t *testing.T) {
	t.Helper()
	old := now
	now = func() time.Time { return testNow }
	t.Cleanup(func() { now = old })
}

func newTestHandler(t *testing.T, requireToken bool) (http.Handler, *fakeBackend, *fakeReceiver) {
	t.Helper()
	fixClock(t)
	b := newFakeBackend(testNow.Add(-90 * time.Second))
	recv := &fakeReceiver{}
	h := NewHandler(Options{
		Backend:  b,
		Webhooks: map[string]forge.WebhookReceiver{"gitea": recv},
		Tokens:   []string{"", "first-token", "second-token-longer"},
	}, requireToken)
	return h, b, recv
}

func do(h http.Handler, method, path, body string, hdr map[string]string) *httptest.ResponseRecorder {
	var r *http.Request
	if body != "" {
		r = httptest.NewRequest(method, path, strings.NewReader(body))
	} else {
		r = httptest.NewRequest(method, path, nil)
	}
	for k, v := range hdr {
		r.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func errorMessage(t *testing.T, w *httptest.ResponseRecorder) string {
	t.Helper()
	if ct := w.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("error Content-Type %q, want application/json; body %s", ct, w.Body)
	}
	var e Error
	if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || e.Error == "" {
		t.Fatalf("error body %q is not {\"error\": ...}: %v", w.Body, err)
	}
	return e.Error
}

// TestEndpoints covers every endpoint's success and failure answers.
func TestEndpoints(t *testing.T) {
	cases := []struct {
		name, method, path, body string
		wantStatus               int
		wantErr                  string // substring of the JSON error, for failures
		check                    func(t *testing.T, w *httptest.ResponseRecorder, b *fakeBackend)
	}{
		{name: "list pools", method: "GET", path: "/api/v1/pools", wantStatus: 200,
			check: func(t *testing.T, w *httptest.ResponseRecorder, b *fakeBackend) {
				var got []pool.PoolStatus
				decode(t, w, &got)
				if len(got) != 2 || got[0].Name != "small" || got[1].Name != "big" || got[0].VMs[vmstate.Busy] != 1 || got[0].Queued != 2 {
					t.Fatalf("pools %+v", got)
				}
			}},
		{name: "get pool", method: "GET", path: "/api/v1/pools/big", wantStatus: 200,
			check: func(t *testing.T, w *httptest.ResponseRecorder, b *fakeBackend) {
				var fields map[string]any
				if err := json.Unmarshal(w.Body.Bytes(), &fields); err != nil || fields["source_deleted"] != true {
					t.Fatalf("pool JSON lacks source_deleted: true: %s (%v)", w.Body, err)
				}
				var got pool.PoolStatus
				decode(t, w, &got)
				if got.Name != "big" || got.Scope != "repo:acme/x" || got.Max != 2 || !got.SourceDeleted {
					t.Fatalf("pool %+v", got)
				}
			}},
		{name: "get unknown pool", method: "GET", path: "/api/v1/pools/nope", wantStatus: 404, wantErr: `pool "nope": not found`},
		{name: "pools wrong method", method: "DELETE", path: "/api/v1/pools", wantStatus: 405, wantErr: "not allowed"},
		{name: "pool wrong method", method: "PUT", path: "/api/v1/pools/big", wantStatus: 405, wantErr: "not allowed"},

		{name: "scale both", method: "POST", path: "/api/v1/pools/small/scale", body: `{"min_idle": 2, "max": 6}`, wantStatus: 200,
			check: func(t *testing.T, w *httptest.ResponseRecorder, b *fakeBackend) {
				var got pool.PoolStatus
				decode(t, w, &got)
				if got.MinIdle != 2 || got.Max != 6 {
					t.Fatalf("scaled to %d/%d", got.MinIdle, got.Max)
				}
				if p, _ := b.Pool("small"); p.MinIdle != 2 || p.Max != 6 {
					t.Fatalf("backend not scaled: %+v", p)
				}
			}},
		{name: "scale max only", method: "POST", path: "/api/v1/pools/small/scale", body: `{"max": 9}`, wantStatus: 200,
			check: func(t *testing.T, w *httptest.ResponseRecorder, b *fakeBackend) {
				if p, _ := b.Pool("small"); p.MinIdle != 1 || p.Max != 9 {
					t.Fatalf("backend %+v, want min_idle kept at 1 and max 9", p)
				}
			}},
		{name: "scale min only", method: "POST", path: "/api/v1/pools/small/scale", body: `{"min_idle": 0}`, wantStatus: 200},
		{name: "scale invalid values", method: "POST", path: "/api/v1/pools/small/scale", body: `{"min_idle": 5, "max": 2}`, wantStatus: 400, wantErr: "want 0 <= min_idle <= max"},
		{name: "scale unknown field", method: "POST", path: "/api/v1/pools/small/scale", body: `{"min": 1}`, wantStatus: 400, wantErr: `unknown field "min"`},
		{name: "scale bad json", method: "POST", path: "/api/v1/pools/small/scale", body: `{"max": "x"}`, wantStatus: 400, wantErr: "invalid JSON"},
		{name: "scale trailing data", method: "POST", path: "/api/v1/pools/small/scale", body: `{"max": 3} {"max": 4}`, wantStatus: 400, wantErr: "after the object"},
		{name: "scale empty body", method: "POST", path: "/api/v1/pools/small/scale", wantStatus: 400, wantErr: "empty body"},
		{name: "scale nothing", method: "POST", path: "/api/v1/pools/small/scale", body: `{}`, wantStatus: 400, wantErr: "nothing to change"},
		{name: "scale unknown pool", method: "POST", path: "/api/v1/pools/nope/scale", body: `{"max": 3}`, wantStatus: 404, wantErr: "not found"},
		{name: "scale wrong method", method: "GET", path: "/api/v1/pools/small/scale", wantStatus: 405, wantErr: "not allowed"},

		{name: "pause", method: "POST", path: "/api/v1/pools/small/pause", wantStatus: 200,
			check: func(t *testing.T, w *httptest.ResponseRecorder, b *fakeBackend) {
				var got pool.PoolStatus
				decode(t, w, &got)
				if p, _ := b.Pool("small"); !got.Paused || !p.Paused {
					t.Fatalf("not paused: answer %+v backend %+v", got, p)
				}
			}},
		{name: "resume", method: "POST", path: "/api/v1/pools/small/resume", wantStatus: 200,
			check: func(t *testing.T, w *httptest.ResponseRecorder, b *fakeBackend) {
				if p, _ := b.Pool("small"); p.Paused {
					t.Fatal("still paused")
				}
			}},
		{name: "pause unknown pool", method: "POST", path: "/api/v1/pools/nope/pause", wantStatus: 404, wantErr: "not found"},
		{name: "resume unknown pool", method: "POST", path: "/api/v1/pools/nope/resume", wantStatus: 404, wantErr: "not found"},
		{name: "pause wrong method", method: "GET", path: "/api/v1/pools/small/pause", wantStatus: 405, wantErr: "not allowed"},

		{name: "list vms", method: "GET", path: "/api/v1/vms", wantStatus: 200,
			check: func(t *testing.T, w *httptest.ResponseRecorder, b *fakeBackend) {
				var got []VMSummary
				decode(t, w, &got)
				want := VMSummary{ID: "vm1", Pool: "small", Phase: vmstate.Busy, RunnerName: "fa-h-vm1",
					Address: "10.200.0.2", AgeSeconds: 90, Created: testNow.Add(-90 * time.Second), PID: 4242}
				if len(got) != 2 || got[0] != want || got[1].ID != "vm2" || got[1].AgeSeconds != 60 {
					t.Fatalf("vms %+v", got)
				}
			}},
		{name: "vms wrong method", method: "POST", path: "/api/v1/vms", wantStatus: 405, wantErr: "not allowed"},
		{name: "get vm", method: "GET", path: "/api/v1/vms/vm1", wantStatus: 200,
			check: func(t *testing.T, w *httptest.ResponseRecorder, b *fakeBackend) {
				var got vmstate.Record
				decode(t, w, &got)
				if got.ID != "vm1" || got.PID != 4242 || got.Phase != vmstate.Busy {
					t.Fatalf("vm %+v", got)
				}
			}},
		{name: "get unknown vm", method: "GET", path: "/api/v1/vms/nope", wantStatus: 404, wantErr: `vm "nope": not found`},
		{name: "kill vm", method: "DELETE", path: "/api/v1/vms/vm2", wantStatus: 202,
			check: func(t *testing.T, w *httptest.ResponseRecorder, b *fakeBackend) {
				var got KillResponse
				decode(t, w, &got)
				if got.ID != "vm2" || len(b.killed) != 1 || b.killed[0] != "vm2" {
					t.Fatalf("answer %+v, killed %v", got, b.killed)
				}
			}},
		{name: "kill unknown vm", method: "DELETE", path: "/api/v1/vms/nope", wantStatus: 404, wantErr: "not found"},
		{name: "vm wrong method", method: "POST", path: "/api/v1/vms/vm1", wantStatus: 405, wantErr: "not allowed"},
		{name: "console unknown vm", method: "GET", path: "/api/v1/vms/nope/console", wantStatus: 404, wantErr: "not found"},
		{name: "console wrong method", method: "POST", path: "/api/v1/vms/vm1/console", wantStatus: 405, wantErr: "not allowed"},

		{name: "healthz", method: "GET", path: "/healthz", wantStatus: 200,
			check: func(t *testing.T, w *httptest.ResponseRecorder, b *fakeBackend) {
				if w.Body.String() != "ok\n" {
					t.Fatalf("body %q", w.Body)
				}
			}},
		{name: "readyz", method: "GET", path: "/readyz", wantStatus: 200},
		{name: "healthz wrong method", method: "POST", path: "/healthz", wantStatus: 405, wantErr: "not allowed"},
		{name: "unknown path", method: "GET", path: "/api/v1/nothing", wantStatus: 404, wantErr: "no such endpoint"},
		{name: "unknown forge", method: "POST", path: "/webhooks/github", body: "{}", wantStatus: 404, wantErr: `forge "github"`},
		{name: "webhook wrong method", method: "GET", path: "/webhooks/gitea", wantStatus: 405, wantErr: "not allowed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h, b, _ := newTestHandler(t, false)
			w := do(h, tc.method, tc.path, tc.body, nil)
			if w.Code != tc.wantStatus {
				t.Fatalf("%s %s: status %d, want %d; body %s", tc.method, tc.path, w.Code, tc.wantStatus, w.Body)
			}
			if tc.wantErr != "" {
				if msg := errorMessage(t, w); !strings.Contains(msg, tc.wantErr) {
					t.Fatalf("error %q does not contain %q", msg, tc.wantErr)
				}
			}
			if tc.wantStatus == 405 && w.Header().Get("Allow") == "" {
				t.Fatal("405 without Allow")
			}
			if tc.check != nil {
				tc.check(t, w, b)
			}
		})
	}
}

func decode(t *testing.T, w *httptest.ResponseRecorder, v any) {
	t.Helper()
	if ct := w.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q", ct)
	}
	if err := json.Unmarshal(w.Body.Bytes(), v); err != nil {
		t.Fatalf("decode %s: %v", w.Body, err)
	}
}

func TestReadyzNotReady(t *testing.T) {
	h, b, _ := newTestHandler(t, true)
	b.ready = false
	if w := do(h, "GET", "/readyz", "", nil); w.Code != http.StatusServiceUnavailable {
		t.Fatalf("readyz %d, want 503", w.Code)
	}
}

// TestAuth: with tokens required, the API needs one of the tokens; the
// probes and webhooks do not.
func TestAuth(t *testing.T) {
	cases := []struct {
		name, method, path, auth string
		wantStatus               int
	}{
		{"no token", "GET", "/api/v1/pools", "", 401},
		{"wrong token", "GET", "/api/v1/pools", "Bearer nope", 401},
		{"token prefix", "GET", "/api/v1/pools", "Bearer first-toke", 401},
		{"token plus suffix", "GET", "/api/v1/pools", "Bearer first-tokenX", 401},
		{"wrong scheme", "GET", "/api/v1/pools", "Basic first-token", 401},
		{"empty bearer", "GET", "/api/v1/pools", "Bearer ", 401},
		{"right token", "GET", "/api/v1/pools", "Bearer first-token", 200},
		{"second token", "GET", "/api/v1/vms", "Bearer second-token-longer", 200},
		{"scheme case", "GET", "/api/v1/vms", "bearer first-token", 200},
		{"mutation without token", "DELETE", "/api/v1/vms/vm1", "", 401},
		{"mutation with token", "DELETE", "/api/v1/vms/vm1", "Bearer first-token", 202},
		{"unknown path without token", "GET", "/api/v1/nothing", "", 401},
		{"healthz open", "GET", "/healthz", "", 200},
		{"readyz open", "GET", "/readyz", "", 200},
		{"webhook open", "POST", "/webhooks/gitea", "", 204},
		{"unknown webhook open", "POST", "/webhooks/nope", "", 404},
		{"dot-dot out of webhooks", "GET", "/webhooks/../api/v1/pools", "", 401},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h, b, _ := newTestHandler(t, true)
			hdr := map[string]string{"X-Signature": "good"}
			if tc.auth != "" {
				hdr["Authorization"] = tc.auth
			}
			w := do(h, tc.method, tc.path, "", hdr)
			if w.Code != tc.wantStatus {
				t.Fatalf("status %d, want %d; body %s", w.Code, tc.wantStatus, w.Body)
			}
			if w.Code == 401 {
				if got := w.Header().Get("WWW-Authenticate"); got != "Bearer" {
					t.Fatalf("WWW-Authenticate %q", got)
				}
				errorMessage(t, w)
				if len(b.killed) != 0 {
					t.Fatal("refused request reached the backend")
				}
			}
		})
	}

	t.Run("no tokens configured refuses", func(t *testing.T) {
		h := NewHandler(Options{Backend: newFakeBackend(testNow), Tokens: []string{""}}, true)
		for _, auth := range []string{"", "Bearer ", "Bearer x"} {
			if w := do(h, "GET", "/api/v1/pools", "", map[string]string{"Authorization": auth}); w.Code != 401 {
				t.Fatalf("auth %q: status %d, want 401", auth, w.Code)
			}
		}
	})
	t.Run("socket mode needs no token", func(t *testing.T) {
		h, _, _ := newTestHandler(t, false)
		if w := do(h, "GET", "/api/v1/pools", "", nil); w.Code != 200 {
			t.Fatalf("status %d", w.Code)
		}
	})
}

// TestWebhookDispatch: a delivery reaches its forge's receiver, which
// kicks the backend; a rejected delivery does not kick.
func TestWebhookDispatch(t *testing.T) {
	h, b, recv := newTestHandler(t, true)
	if w := do(h, "POST", "/webhooks/gitea", `{"action":"queued"}`, map[string]string{"X-Signature": "bad"}); w.Code != 401 {
		t.Fatalf("bad signature: status %d", w.Code)
	}
	if b.kickCount() != 0 {
		t.Fatal("kicked on a rejected delivery")
	}
	if w := do(h, "POST", "/webhooks/gitea", `{"action":"queued"}`, map[string]string{"X-Signature": "good"}); w.Code != 204 {
		t.Fatalf("good signature: status %d", w.Code)
	}
	if b.kickCount() != 1 || recv.calls != 2 {
		t.Fatalf("kicks %d, receiver calls %d; want 1 and 2", b.kickCount(), recv.calls)
	}
}
