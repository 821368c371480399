// Package fleettest runs what tests of a fleet need: an in-process NATS
// server with JetStream (the real server, from its Go module, linked into
// test binaries only), a three-node JetStream cluster, an operator (JWT)
// setup for credentials files, and a TCP relay a test can cut to
// partition a host.
package fleettest

import (
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Token is the NATS token RunNATS's server requires of every client, as
// a fleet's NATS must (a server without authentication lets any CI job
// on the LAN squat job keys or delete the buckets).
const Token = "fleettest-token-3f9c1e"

// TokenFile writes Token to a file only its owner may read and returns
// its path: a fleet's token_file.
func TokenFile(t testing.TB) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "nats-token")
	if err := os.WriteFile(p, []byte(Token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// RunNATS starts an in-process JetStream server for t that requires
// Token and returns its URL.
func RunNATS(t testing.TB) string {
	t.Helper()
	return runServer(t, &server.Options{Authorization: Token})
}

// runServer starts an in-process JetStream server on loopback with o's
// authentication, storing under a temporary directory, until t ends,
// and returns its URL.
func runServer(t testing.TB, o *server.Options) string {
	t.Helper()
	o.Host, o.Port, o.JetStream, o.StoreDir, o.NoLog, o.NoSigs = "127.0.0.1", -1, true, t.TempDir(), true, true
	s, err := server.NewServer(o)
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	t.Cleanup(s.Shutdown)
	return s.ClientURL()
}

// Proxy is a TCP relay to a NATS server that a test can cut and mend
// (a network partition of one host) or have drop the server's replies
// (DropReplies: answers lost on the way).
type Proxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	cut    bool
	conns  []net.Conn
	// Replies to drop (DropReplies): how many more, and what they hold.
	drop      int
	dropMatch []byte
	dropped   int
}

// NewProxy relays to target (host:port) until t ends.
func NewProxy(t testing.TB, target string) *Proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{ln: ln, target: target}
	t.Cleanup(func() { ln.Close(); p.SetCut(true) })
	go p.serve()
	return p
}

// URL is the relay's NATS URL.
func (p *Proxy) URL() string { return "nats://" + p.ln.Addr().String() }

func (p *Proxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.cut {
			p.mu.Unlock()
			c.Close()
			continue
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.conns = append(p.conns, c, s)
		p.mu.Unlock()
		go func() { _, _ = io.Copy(s, c); s.Close() }()
		go func() { _ = p.relayFromServer(c, s); c.Close() }()
	}
}

// SetCut cuts (closing every relayed connection) or mends the link.
func (p *Proxy) SetCut(cut bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = cut
	if cut {
		for _, c := range p.conns {
			c.Close()
		}
		p.conns = nil
	}
}
