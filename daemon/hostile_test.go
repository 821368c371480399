package daemon

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/api"
	"github.com/nixos-fireactions/nixos-fireactions/forge/github"
	"github.com/nixos-fireactions/nixos-fireactions/internal/double/githubdouble"
	"github.com/nixos-fireactions/nixos-fireactions/metrics"
)

const testHookSecret = "hook-secret-for-tests"

// okAgent answers every report 204, like the agent handler does for a
// good one.
var okAgent = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	w.WriteHeader(http.StatusNoContent)
})

// isClosed waits up to within for the server to end conn (EOF, reset or
// an HTTP answer followed by close) and reports whether it did.
func isClosed(conn net.Conn, within time.Duration) bool {
	_ = conn.SetReadDeadline(time.Now().Add(within))
	_, err := io.Copy(io.Discard, conn)
	var ne net.Error
	return !(errors.As(err, &ne) && ne.Timeout())
}

// TestAgentListenerCutsSlowClients: a guest that sends its headers and
// then trickles the body (slow loris) is cut once the read timeout has
// passed, not held open.
func TestAgentListenerCutsSlowClients(t *testing.T) {
	addr := startAgentListener(t, okAgent, 50)
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /agent/v1/report HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
	stop := make(chan struct{})
	defer close(stop)
	go func() { // one byte every 50 ms: never idle, never done
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				if _, err := conn.Write([]byte("x")); err != nil {
					return
				}
			}
		}
	}()
	start := time.Now()
	if !isClosed(conn, 8*time.Second) {
		t.Fatalf("a trickling client was still connected after %s", time.Since(start).Round(time.Millisecond))
	}
	t.Logf("slow client cut after %s", time.Since(start).Round(time.Millisecond))
}

// TestAgentListenerCapsConnectionsPerSource: one guest holding many
// connections open gets no more than its share (the rest are closed at
// once), and another guest's report still gets through.
func TestAgentListenerCapsConnectionsPerSource(t *testing.T) {
	const perSource, tries = 4, 40
	addr := startAgentListener(t, okAgent, perSource)
	var conns []net.Conn
	for i := 0; i < tries; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			continue // refused outright counts as refused
		}
		defer c.Close()
		fmt.Fprintf(c, "POST /agent/v1/report HTTP/1.1\r\nHost: x\r\n") // headers never end
		conns = append(conns, c)
	}
	var open atomic.Int32
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if !isClosed(c, 2*time.Second) {
				open.Add(1)
			}
		}()
	}
	// Meanwhile another guest (another source address) reports.
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}
	cl := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: d.DialContext}}
	resp, err := cl.Post("http://"+addr+"/agent/v1/report", "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatalf("another guest's report: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("another guest's report: %s", resp.Status)
	}
	wg.Wait()
	if n := open.Load(); n > perSource {
		t.Fatalf("one source holds %d connections open (cap %d)", n, perSource)
	}
}

// hookEnv is the webhook path as serve builds it: the API handler on TCP
// terms (tokens required elsewhere), the route to the one driver of a
// GitHub with three pools, counted by the metrics.
type hookEnv struct {
	h    http.Handler
	mx   *metrics.Metrics
	logs *bytes.Buffer
}

func newHookEnv(t *testing.T) *hookEnv {
	t.Helper()
	logs := &bytes.Buffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	c, err := github.New(github.Options{Name: "github", URL: "http://127.0.0.1:1/", Token: "ghp_x",
		WebhookSecret: testHookSecret, PollInterval: time.Hour, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	mx := metrics.New(t.TempDir())
	for _, name := range []string{"a", "b", "c"} {
		if _, err := c.Pool(github.PoolOptions{Scope: github.Scope{Kind: "repo", Owner: "o", Repo: name}, Labels: []string{name}}); err != nil {
			t.Fatal(err)
		}
	}
	drivers := &forgeSet{drivers: map[string]forgeDriver{"github": githubForge{c}}}
	h := newTestAPIHandler(api.Options{Backend: kickOnly{}, Webhooks: drivers.webhooks(mx), Tokens: []string{"tok"}, Log: log})
	return &hookEnv{h: h, mx: mx, logs: logs}
}

func (e *hookEnv) post(path, event, delivery, sig string, body io.Reader) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodPost, path, body)
	if c, ok := body.(*countingReader); ok { // as forges send it
		r.ContentLength = c.size
	}
	r.Header.Set("X-GitHub-Event", event)
	r.Header.Set("X-GitHub-Delivery", delivery)
	if sig != "" {
		r.Header.Set("X-Hub-Signature-256", sig)
	}
	w := httptest.NewRecorder()
	e.h.ServeHTTP(w, r)
	return w
}

// pingBody is a ping payload of about size bytes.
func pingBody(size int) []byte {
	return []byte(`{"zen":"` + strings.Repeat("z", max(0, size-10)) + `"}`)
}

// TestWebhookOversizedBodyIs413: a delivery past the limit is answered
// 413, not cut short and refused as badly signed; one within it is taken.
func TestWebhookOversizedBodyIs413(t *testing.T) {
	e := newHookEnv(t)
	big := pingBody(25<<20 + 1)
	w := e.post("/webhooks/github", "ping", "big", githubdouble.SignPayload(testHookSecret, big), bytes.NewReader(big))
	if w.Code != http.StatusRequestEntityTooLarge {
		t.Fatalf("a %d-byte signed delivery: %d %s", len(big), w.Code, strings.TrimSpace(w.Body.String()))
	}
	small := pingBody(100)
	if w := e.post("/webhooks/github", "ping", "small", githubdouble.SignPayload(testHookSecret, small), bytes.NewReader(small)); w.Code != http.StatusOK {
		t.Fatalf("a small signed delivery: %d %s", w.Code, w.Body.String())
	}
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r    io.Reader
	size int64
	n    atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// TestWebhookBodyReadOncePerDelivery: with three pools on the forge, a
// delivery's body is read off the connection once, held in memory once
// (not once per pool and again per driver), and counted once in the
// metrics.
func TestWebhookBodyReadOncePerDelivery(t *testing.T) {
	e := newHookEnv(t)
	body := pingBody(512 << 10)
	sig := githubdouble.SignPayload(testHookSecret, body)
	e.post("/webhooks/github", "ping", "warm-up", sig, bytes.NewReader(body)) // first-use allocations
	cr := &countingReader{r: bytes.NewReader(body), size: int64(len(body))}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	w := e.post("/webhooks/github", "ping", "once", sig, cr)
	runtime.ReadMemStats(&after)
	if w.Code != http.StatusOK {
		t.Fatalf("delivery: %d %s", w.Code, w.Body.String())
	}
	if n := cr.n.Load(); n != int64(len(body)) {
		t.Errorf("%d bytes read for a %d-byte body", n, len(body))
	}
	alloc := after.TotalAlloc - before.TotalAlloc
	t.Logf("one %d KiB delivery to 3 pools allocated %d KiB", len(body)>>10, alloc>>10)
	if alloc > uint64(len(body))*5/2 {
		t.Errorf("one %d-byte delivery to 3 pools allocated %d bytes: the body is copied per pool", len(body), alloc)
	}
	rec := httptest.NewRecorder()
	e.mx.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	sc := bufio.NewScanner(rec.Body)
	for sc.Scan() {
		if l := sc.Text(); strings.HasPrefix(l, "fireactions_forge_requests_total") && strings.Contains(l, `op="webhook"`) {
			if !strings.HasSuffix(l, " 2") {
				t.Errorf("2 deliveries counted as: %s", l)
			}
		}
	}
}

// TestWebhookUnauthenticatedValuesBounded: deliveries with huge ids and
// requests to huge paths, all refused, write a bounded amount of log; a
// huge delivery id never enters the de-dup ring (the heap stays flat).
func TestWebhookUnauthenticatedValuesBounded(t *testing.T) {
	e := newHookEnv(t)
	longID := strings.Repeat("d", 1<<20)
	body := pingBody(100)
	for i := 0; i < 50; i++ {
		e.post("/webhooks/github", "ping", longID+fmt.Sprint(i), "sha256=00", bytes.NewReader(body))
		e.post("/webhooks/"+strings.Repeat("p", 64<<10), "ping", "x", "", bytes.NewReader(body))
		r := httptest.NewRequest(http.MethodGet, "/api/v1/"+strings.Repeat("v", 64<<10), nil)
		e.h.ServeHTTP(httptest.NewRecorder(), r)
	}
	t.Logf("150 refused requests: %d bytes of log", e.logs.Len())
	if e.logs.Len() > 150<<10 {
		t.Errorf("150 refused requests wrote %d bytes of log", e.logs.Len())
	}

	// Signed replays with 1 MB ids: the ring must not keep them.
	sig := githubdouble.SignPayload(testHookSecret, body)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := 0; i < 100; i++ {
		e.post("/webhooks/github", "ping", longID+fmt.Sprint(i), sig, bytes.NewReader(body))
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	grew := int64(after.HeapInuse) - int64(before.HeapInuse)
	t.Logf("100 signed deliveries with 1 MB ids: heap in use grew %d KiB", grew>>10)
	if grew > 16<<20 {
		t.Errorf("100 deliveries with 1 MB ids grew the heap by %d MiB", grew>>20)
	}
	// A normal id is still de-duplicated.
	if w := e.post("/webhooks/github", "ping", "2b3e-1", sig, bytes.NewReader(body)); w.Code != http.StatusOK || !strings.Contains(w.Body.String(), "pong") {
		t.Fatalf("first delivery: %d %s", w.Code, w.Body.String())
	}
	if w := e.post("/webhooks/github", "ping", "2b3e-1", sig, bytes.NewReader(body)); !strings.Contains(w.Body.String(), "duplicate") {
		t.Fatalf("replay: %d %s", w.Code, w.Body.String())
	}
}

var _ = context.Background

// kickOnly is the backend a webhook needs: Kick.
type kickOnly struct{ api.Backend }

func (kickOnly) Kick() {}
