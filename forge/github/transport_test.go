package github

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeClock is a clock whose sleeps return at once, moving it on.
type fakeClock struct {
	at    time.Time
	slept []time.Duration
}

func (c *fakeClock) clock() clock {
	return clock{now: func() time.Time { return c.at }, sleep: func(_ context.Context, d time.Duration) error {
		c.slept = append(c.slept, d)
		c.at = c.at.Add(d)
		return nil
	}}
}

// answers is a RoundTripper answering from a list, counting calls.
type answers struct {
	list  []func() *http.Response
	calls int
}

func (a *answers) RoundTrip(*http.Request) (*http.Response, error) {
	r := a.list[min(a.calls, len(a.list)-1)]()
	a.calls++
	return r, nil
}

func answer(code int, body string, headers ...string) func() *http.Response {
	return func() *http.Response {
		h := http.Header{}
		for i := 0; i+1 < len(headers); i += 2 {
			h.Set(headers[i], headers[i+1])
		}
		return &http.Response{StatusCode: code, Header: h, Body: io.NopCloser(strings.NewReader(body))}
	}
}

// GitHub's body of a secondary rate limit; its headers can be those of
// a refusal: a budget left, no Retry-After.
const secondaryBody = `{"message":"You have exceeded a secondary rate limit. Please wait a few minutes before you try again.","documentation_url":"https://docs.github.com/rest/overview/rate-limits-for-the-rest-api"}`

// A 403 secondary rate limit without Retry-After is waited out for at
// least a minute (GitHub: "wait for at least one minute before
// retrying"), then retried; a plain 403 (a permission refused) is
// answered at once, body intact, and not retried.
func TestSecondaryLimitWithoutRetryAfterWaitsAMinute(t *testing.T) {
	for _, tc := range []struct {
		name      string
		first     func() *http.Response
		wantCalls int
		wantWait  bool
		wantCode  int
		wantBody  string
	}{
		{"secondary, no Retry-After", answer(http.StatusForbidden, secondaryBody, "X-RateLimit-Remaining", "4999"), 2, true, http.StatusOK, "ok"},
		{"permission refused", answer(http.StatusForbidden, `{"message":"Resource not accessible by integration"}`, "X-RateLimit-Remaining", "4999"), 1, false,
			http.StatusForbidden, "Resource not accessible by integration"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fc := &fakeClock{at: time.Unix(1_700_000_000, 0)}
			next := &answers{list: []func() *http.Response{tc.first, answer(http.StatusOK, "ok")}}
			tr := newRetryTransport(next, RetryOptions{Backoff: time.Millisecond}, slog.New(slog.DiscardHandler))
			tr.clock = fc.clock()
			req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, "https://api.github.invalid/orgs/acme/actions/runners", nil)
			resp, err := tr.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.wantCode || !strings.Contains(string(body), tc.wantBody) || next.calls != tc.wantCalls {
				t.Fatalf("%d %q after %d calls; want %d %q after %d", resp.StatusCode, body, next.calls, tc.wantCode, tc.wantBody, tc.wantCalls)
			}
			var waited time.Duration
			for _, d := range fc.slept {
				waited += d
			}
			if tc.wantWait && waited < time.Minute {
				t.Fatalf("retried after %v (sleeps %v), want at least a minute", waited, fc.slept)
			}
			if !tc.wantWait && waited != 0 {
				t.Fatalf("waited %v for a refusal", waited)
			}
		})
	}
}

// Secondary limits one after another without Retry-After wait longer
// each time (GitHub: "wait an exponentially increasing amount of time
// between retries"): 1, 2, 4 minutes; an answer that is no limit starts
// again at a minute.
func TestRepeatedSecondaryLimitsBackOff(t *testing.T) {
	fc := &fakeClock{at: time.Unix(1_700_000_000, 0)}
	limited := answer(http.StatusForbidden, secondaryBody, "X-RateLimit-Remaining", "4999")
	next := &answers{list: []func() *http.Response{limited, limited, limited, answer(http.StatusOK, "ok"), limited, answer(http.StatusOK, "ok")}}
	tr := newRetryTransport(next, RetryOptions{Backoff: time.Millisecond, MaxWait: time.Hour}, slog.New(slog.DiscardHandler))
	tr.clock = fc.clock()
	for i := range 2 {
		req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, "https://api.github.invalid/orgs/acme/actions/runners", nil)
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("call %d: %d", i, resp.StatusCode)
		}
	}
	want := []time.Duration{time.Minute, 2 * time.Minute, 4 * time.Minute, time.Minute}
	if !slices.Equal(fc.slept, want) {
		t.Fatalf("waits %v, want %v", fc.slept, want)
	}
	// Capped: many in a row never wait more than secondaryWaitMax.
	for range 12 {
		fc.at = fc.at.Add(secondaryWaitMax) // each its own episode
		tr.secondaryLimited(0, false)
	}
	fc.at = fc.at.Add(secondaryWaitMax)
	if d := tr.secondaryLimited(0, false); d != secondaryWaitMax {
		t.Fatalf("wait after many limits %v, want the cap %v", d, secondaryWaitMax)
	}
}

// burst answers n calls in flight together with a secondary limit each,
// and their n retries, once all are in, with 200s: every limit is
// counted before any answer clears the strikes.
type burst struct {
	n       int
	mu      sync.Mutex
	arrived int
	all     chan struct{}
	retried chan struct{}
}

func (b *burst) RoundTrip(*http.Request) (*http.Response, error) {
	b.mu.Lock()
	b.arrived++
	k := b.arrived
	switch k {
	case b.n:
		close(b.all)
	case 2 * b.n:
		close(b.retried)
	}
	b.mu.Unlock()
	if k > b.n {
		<-b.retried
		return answer(http.StatusOK, "ok")(), nil
	}
	<-b.all
	return answer(http.StatusForbidden, secondaryBody, "X-RateLimit-Remaining", "4999")(), nil
}

// Calls in flight together on one credential that are all refused by a
// secondary limit are one episode: one strike, a one-minute hold, not a
// strike each (six at once would otherwise hold for 16 minutes).
func TestConcurrentSecondaryLimitsAreOneStrike(t *testing.T) {
	const n = 6
	start := time.Unix(1_700_000_000, 0)
	var mu sync.Mutex
	var slept []time.Duration
	next := &burst{n: n, all: make(chan struct{}), retried: make(chan struct{})}
	tr := newRetryTransport(next, RetryOptions{Backoff: time.Millisecond, MaxWait: time.Hour}, slog.New(slog.DiscardHandler))
	// Time stands still: every refusal lands inside the first one's hold.
	tr.clock = clock{now: func() time.Time { return start }, sleep: func(_ context.Context, d time.Duration) error {
		mu.Lock()
		defer mu.Unlock()
		slept = append(slept, d)
		return nil
	}}
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, "https://api.github.invalid/orgs/acme/actions/runners", nil)
			resp, err := tr.RoundTrip(req)
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
		})
	}
	wg.Wait()
	tr.mu.Lock()
	hold := tr.holdUntil.Sub(start)
	tr.mu.Unlock()
	if hold != time.Minute {
		t.Fatalf("hold %v, want %v (sleeps %v)", hold, time.Minute, slept)
	}
	for _, d := range slept {
		if d > time.Minute {
			t.Fatalf("a call waited %v, want at most a minute (sleeps %v)", d, slept)
		}
	}
}
