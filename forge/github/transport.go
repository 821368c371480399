package github

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/sleep"
)

// RetryOptions tune how calls are retried and how long rate limits are
// waited for; zero values take the defaults.
type RetryOptions struct {
	// AttemptTimeout bounds one attempt; default 15s.
	AttemptTimeout time.Duration
	// Attempts is the most tries of one call; default 5.
	Attempts int
	// Backoff is the first wait after a failure; it doubles up to 16
	// times as long, with jitter. Default 500ms.
	Backoff time.Duration
	// MaxWait is the longest a call waits for a rate limit to lift; a
	// longer limit fails the call at once. Default 1m.
	MaxWait time.Duration
}

func (o RetryOptions) withDefaults() RetryOptions {
	if o.AttemptTimeout <= 0 {
		o.AttemptTimeout = 15 * time.Second
	}
	if o.Attempts <= 0 {
		o.Attempts = 5
	}
	if o.Backoff <= 0 {
		o.Backoff = 500 * time.Millisecond
	}
	if o.MaxWait <= 0 {
		o.MaxWait = time.Minute
	}
	return o
}

// retryTransport sends GitHub calls: it tracks the rate limit GitHub
// reports (X-RateLimit-Remaining/Reset), waits out an exhausted budget
// and secondary limits (Retry-After, else at least a minute) before
// sending, and retries timeouts, connection failures, 5xx and rate-limit
// answers with backoff.
type retryTransport struct {
	next  http.RoundTripper
	o     RetryOptions
	log   *slog.Logger
	clock clock

	mu        sync.Mutex
	left      int       // X-RateLimit-Remaining; -1 unknown
	reset     time.Time // X-RateLimit-Reset
	holdUntil time.Time // a secondary limit's Retry-After
	// strikes counts the secondary limits since the last answer that
	// was none: each waits twice the one before (secondaryWait).
	strikes int
}

// clock is the time the transport reads and waits by; tests fake it.
type clock struct {
	now   func() time.Time
	sleep func(ctx context.Context, d time.Duration) error
}

var wallClock = clock{now: time.Now, sleep: sleep.For}

func newRetryTransport(next http.RoundTripper, o RetryOptions, log *slog.Logger) *retryTransport {
	return &retryTransport{next: next, o: o.withDefaults(), log: log, clock: wallClock, left: -1}
}

// secondaryWait and secondaryWaitMax bound how long a secondary rate
// limit that names no Retry-After is waited out: GitHub's docs say "wait
// for at least one minute before retrying" and, as limits repeat, "wait
// an exponentially increasing amount of time between retries". The
// first waits a minute, each one more twice as long, up to the most;
// an answer that is neither a rate limit nor a 5xx starts again at a
// minute.
const (
	secondaryWait    = time.Minute
	secondaryWaitMax = 16 * time.Minute
)

// secondaryLimited counts a secondary limit and holds every call on the
// credential for its wait: Retry-After if GitHub named one, else until the
// reset if the budget is spent, else secondaryWait doubled per strike. A
// limit answered while a hold is already on is the same episode (calls
// sent together, refused together): it adds no strike and waits out the
// hold, or a later Retry-After. It returns how long the call waits.
func (t *retryTransport) secondaryLimited(retryAfter time.Duration, spent bool) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.clock.now()
	if now.Before(t.holdUntil) {
		if until := now.Add(retryAfter); until.After(t.holdUntil) {
			t.holdUntil = until
		}
		return t.holdUntil.Sub(now)
	}
	strike := min(secondaryWait<<min(t.strikes, 10), secondaryWaitMax)
	t.strikes++
	if retryAfter == 0 { // GitHub's advice: until the reset, or a minute and more each time
		retryAfter = strike
		if spent {
			retryAfter = max(t.reset.Sub(now)+time.Second, time.Second)
		}
	}
	t.holdUntil = now.Add(retryAfter)
	return retryAfter
}

func (t *retryTransport) remaining() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.left
}

// RoundTrip implements http.RoundTripper.
func (t *retryTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	for attempt := 1; ; attempt++ {
		if err := t.waitLimits(ctx, req); err != nil {
			return nil, err
		}
		r := req
		if attempt > 1 {
			var err error
			if r, err = rewound(req); err != nil {
				return nil, err
			}
		}
		actx, cancel := context.WithTimeout(ctx, t.o.AttemptTimeout)
		resp, err := t.next.RoundTrip(r.WithContext(actx))
		if err == nil {
			t.record(resp)
		}
		wait, why := t.classify(ctx, resp, err, attempt)
		last := attempt >= t.o.Attempts || (req.Body != nil && req.GetBody == nil)
		if why == "" || last || wait > t.o.MaxWait {
			if err != nil {
				cancel()
				return nil, err
			}
			resp.Body = &cancelBody{ReadCloser: resp.Body, cancel: cancel}
			return resp, nil
		}
		if resp != nil {
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
		}
		cancel()
		t.log.Debug("github call failed; retrying", "method", req.Method, "path", req.URL.Path,
			"attempt", attempt, "reason", why, "wait", wait.Round(time.Millisecond))
		if err := t.clock.sleep(ctx, wait); err != nil {
			return nil, err
		}
	}
}

// classify says whether an attempt's outcome is worth another, why, and
// how long to wait first.
func (t *retryTransport) classify(ctx context.Context, resp *http.Response, err error, attempt int) (time.Duration, string) {
	backoff := t.backoff(attempt)
	if err != nil {
		if ctx.Err() != nil {
			return 0, "" // the caller gave up
		}
		return backoff, "transport: " + err.Error()
	}
	retryAfter := parseRetryAfter(resp.Header.Get("Retry-After"), t.clock.now())
	switch code := resp.StatusCode; {
	case code == http.StatusTooManyRequests || (code == http.StatusForbidden && (retryAfter > 0 || secondaryLimit(resp))):
		wait := t.secondaryLimited(retryAfter, resp.Header.Get("X-RateLimit-Remaining") == "0")
		return wait, fmt.Sprintf("secondary rate limit (%d)", code)
	case code == http.StatusForbidden && resp.Header.Get("X-RateLimit-Remaining") == "0":
		return t.untilReset(), "rate limit exhausted"
	case code >= 500:
		return backoff, resp.Status
	}
	t.mu.Lock()
	t.strikes = 0
	t.mu.Unlock()
	return 0, ""
}

// secondaryLimit reports whether a 403 is a secondary rate limit: its
// headers may be those of a refusal (a budget left, no Retry-After), only
// GitHub's message says "You have exceeded a secondary rate limit". The
// body read is put back for the caller.
func secondaryLimit(resp *http.Response) bool {
	if resp.Header.Get("X-RateLimit-Remaining") == "0" {
		return false // the primary budget: waited until its reset
	}
	head, err := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	resp.Body = struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(head), resp.Body), resp.Body}
	return err == nil && strings.Contains(strings.ToLower(string(head)), "secondary rate limit")
}

// backoff is the wait after a failed attempt: doubling from Backoff, at
// most 16 times it, with jitter in its upper half.
func (t *retryTransport) backoff(attempt int) time.Duration {
	d := t.o.Backoff << min(attempt-1, 4)
	return d/2 + rand.N(d/2+1)
}

// record keeps the rate limit GitHub reports.
func (t *retryTransport) record(resp *http.Response) {
	left, err := strconv.Atoi(resp.Header.Get("X-RateLimit-Remaining"))
	if err != nil {
		return
	}
	reset, _ := strconv.ParseInt(resp.Header.Get("X-RateLimit-Reset"), 10, 64)
	t.mu.Lock()
	defer t.mu.Unlock()
	t.left = left
	if reset > 0 {
		t.reset = time.Unix(reset, 0)
	}
}

func (t *retryTransport) untilReset() time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	return max(t.reset.Sub(t.clock.now())+time.Second, time.Second)
}

// waitLimits waits, before sending, while the budget is spent or a
// secondary limit holds; a wait longer than MaxWait fails the call.
func (t *retryTransport) waitLimits(ctx context.Context, req *http.Request) error {
	t.mu.Lock()
	var until time.Time
	why := ""
	now := t.clock.now()
	if t.left == 0 && now.Before(t.reset) {
		until, why = t.reset.Add(time.Second), "rate limit exhausted"
	}
	if t.holdUntil.After(until) {
		until, why = t.holdUntil, "secondary rate limit"
	}
	t.mu.Unlock()
	wait := until.Sub(now)
	if wait <= 0 {
		return nil
	}
	if wait > t.o.MaxWait {
		return fmt.Errorf("github: %s %s: %s until %s", req.Method, req.URL.Path, why, until.UTC().Format(time.RFC3339))
	}
	t.log.Info("waiting for the github rate limit", "reason", why, "wait", wait.Round(time.Millisecond))
	return t.clock.sleep(ctx, wait)
}

func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil && s >= 0 {
		return time.Duration(s) * time.Second
	}
	if at, err := http.ParseTime(v); err == nil {
		return max(at.Sub(now), 0)
	}
	return 0
}

// rewound is req again with a fresh body, for another attempt.
func rewound(req *http.Request) (*http.Request, error) {
	r := req.Clone(req.Context())
	if req.Body != nil && req.GetBody != nil {
		b, err := req.GetBody()
		if err != nil {
			return nil, fmt.Errorf("github: rewind request body: %w", err)
		}
		r.Body = b
	}
	return r, nil
}

// cancelBody ends an attempt's context once its body is closed.
type cancelBody struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (b *cancelBody) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}
