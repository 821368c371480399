// Package httpguard bounds what a client can make one of the host's HTTP
// servers hold: the agent listener (every guest can reach it) and the API
// with its webhook endpoint (it may face the internet). It sets the
// server's timeouts, caps connections per listener and per source address
// (excess connections are closed at once, never queued), clips
// unauthenticated values before they are logged, and rate-limits the logs
// of refusals.
package httpguard

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// Limits bound one server. Zero fields take the matching Default.
type Limits struct {
	// ReadHeaderTimeout bounds reading a request's headers.
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds reading a whole request, body included (a
	// trickling body is cut). Streams lift it per request.
	ReadTimeout time.Duration
	// WriteTimeout bounds writing an answer to a client that does not read.
	WriteTimeout time.Duration
	// IdleTimeout ends kept-alive connections with no request.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds a request's headers.
	MaxHeaderBytes int
	// MaxConns caps the listener's open connections; 0: Default's.
	MaxConns int
	// MaxConnsPerSource caps the open connections of one source IP
	// address; 0: no cap beyond MaxConns (unix sockets have no source).
	MaxConnsPerSource int
}

// Default are the limits of a server that set none.
var Default = Limits{
	ReadHeaderTimeout: 10 * time.Second,
	ReadTimeout:       30 * time.Second,
	WriteTimeout:      30 * time.Second,
	IdleTimeout:       60 * time.Second,
	MaxHeaderBytes:    64 << 10,
	MaxConns:          256,
}

func (l Limits) withDefaults() Limits {
	d := Default
	if l.ReadHeaderTimeout <= 0 {
		l.ReadHeaderTimeout = d.ReadHeaderTimeout
	}
	if l.ReadTimeout <= 0 {
		l.ReadTimeout = d.ReadTimeout
	}
	if l.WriteTimeout <= 0 {
		l.WriteTimeout = d.WriteTimeout
	}
	if l.IdleTimeout <= 0 {
		l.IdleTimeout = d.IdleTimeout
	}
	if l.MaxHeaderBytes <= 0 {
		l.MaxHeaderBytes = d.MaxHeaderBytes
	}
	if l.MaxConns <= 0 {
		l.MaxConns = d.MaxConns
	}
	return l
}

// Server is an http.Server for h with l's timeouts and header bound,
// speaking HTTP/1 only (over TLS too).
func Server(h http.Handler, l Limits, log *slog.Logger) *http.Server {
	l = l.withDefaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// HTTP/1 only: an HTTP/2 connection carries up to 250 requests at
	// once, so the connection caps would no longer bound the requests
	// (and their goroutines) a client holds.
	var protos http.Protocols
	protos.SetHTTP1(true)
	return &http.Server{
		Handler:           h,
		Protocols:         &protos,
		ReadHeaderTimeout: l.ReadHeaderTimeout,
		ReadTimeout:       l.ReadTimeout,
		WriteTimeout:      l.WriteTimeout,
		IdleTimeout:       l.IdleTimeout,
		MaxHeaderBytes:    l.MaxHeaderBytes,
		// The server's own complaints (TLS handshakes, bad requests) are
		// client-driven: at most one a second.
		ErrorLog: slog.NewLogLogger(&sampled{h: log.Handler(), every: NewEvery(time.Second)}, slog.LevelWarn),
	}
}

// Serve serves h on ln with l until ctx ends, then shuts down, giving
// requests in flight grace to finish. The listener is capped with Listen.
func Serve(ctx context.Context, ln net.Listener, h http.Handler, l Limits, grace time.Duration, log *slog.Logger) error {
	srv := Server(h, l, log)
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), grace)
		defer cancel()
		if srv.Shutdown(sctx) != nil {
			srv.Close()
		}
	}()
	return srv.Serve(Listen(ln, l, log))
}

// Listen caps ln's open connections: past l.MaxConns in all, or
// l.MaxConnsPerSource from one source address, a new connection is closed
// as soon as it is accepted (so one client cannot fill the backlog that
// the others wait in). Refusals are logged at most every 10 s, with how
// many there were.
func Listen(ln net.Listener, l Limits, log *slog.Logger) net.Listener {
	l = l.withDefaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &capped{Listener: ln, max: l.MaxConns, perSource: l.MaxConnsPerSource, bySource: map[string]int{}, log: log, every: NewEvery(10 * time.Second)}
}

type capped struct {
	net.Listener
	max, perSource int
	log            *slog.Logger
	every          *Every

	mu       sync.Mutex
	open     int
	bySource map[string]int
}

func (c *capped) Accept() (net.Conn, error) {
	for {
		conn, err := c.Listener.Accept()
		if err != nil {
			return nil, err
		}
		src := source(conn.RemoteAddr())
		c.mu.Lock()
		ok := c.open < c.max && (c.perSource <= 0 || src == "" || c.bySource[src] < c.perSource)
		if ok {
			c.open++
			if src != "" {
				c.bySource[src]++
			}
		}
		open, fromSrc := c.open, c.bySource[src]
		c.mu.Unlock()
		if ok {
			return &tracked{Conn: conn, l: c, src: src}, nil
		}
		conn.Close()
		if n, ok := c.every.Allow(); ok {
			c.log.Warn("connection refused: too many open", "source", src, "open", open, "from_source", fromSrc,
				"max", c.max, "max_per_source", c.perSource, "refused_since_last_log", n)
		}
	}
}

func (c *capped) release(src string) {
	c.mu.Lock()
	c.open--
	if src != "" {
		if c.bySource[src]--; c.bySource[src] <= 0 {
			delete(c.bySource, src)
		}
	}
	c.mu.Unlock()
}

// source is the IP address of a TCP peer; "" for others.
func source(a net.Addr) string {
	if t, ok := a.(*net.TCPAddr); ok {
		return t.IP.String()
	}
	return ""
}

type tracked struct {
	net.Conn
	l    *capped
	src  string
	once sync.Once
}

func (t *tracked) Close() error {
	err := t.Conn.Close()
	t.once.Do(func() { t.l.release(t.src) })
	return err
}

// Clip bounds an unauthenticated value for a log line: at most n bytes,
// with how long it really was.
func Clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…(" + strconv.Itoa(len(s)) + " bytes)"
}

// Every lets one event through per period and counts the others.
type Every struct {
	period time.Duration
	mu     sync.Mutex
	last   time.Time
	missed int
}

// NewEvery lets one event through per period.
func NewEvery(period time.Duration) *Every { return &Every{period: period} }

// Allow reports whether this event may be logged, and how many were held
// back since the last one that was.
func (e *Every) Allow() (missed int, ok bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := time.Now()
	if !e.last.IsZero() && now.Sub(e.last) < e.period {
		e.missed++
		return 0, false
	}
	missed, e.last, e.missed = e.missed, now, 0
	return missed, true
}

// sampled passes at most one record per period to h.
type sampled struct {
	h     slog.Handler
	every *Every
}

func (s *sampled) Enabled(ctx context.Context, l slog.Level) bool { return s.h.Enabled(ctx, l) }
func (s *sampled) Handle(ctx context.Context, r slog.Record) error {
	n, ok := s.every.Allow()
	if !ok {
		return nil
	}
	if len(r.Message) > 512 {
		r = slog.NewRecord(r.Time, r.Level, Clip(r.Message, 512), r.PC)
	}
	if n > 0 {
		r.AddAttrs(slog.Int("suppressed_since_last", n))
	}
	return s.h.Handle(ctx, r)
}
func (s *sampled) WithAttrs(a []slog.Attr) slog.Handler {
	return &sampled{h: s.h.WithAttrs(a), every: s.every}
}
func (s *sampled) WithGroup(g string) slog.Handler {
	return &sampled{h: s.h.WithGroup(g), every: s.every}
}
