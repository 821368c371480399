package httpguard

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestGlobalCapClosesTheExcess: past MaxConns in all (sources apart), new
// connections are closed at once; once one goes, another is taken.
func TestGlobalCapClosesTheExcess(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = Serve(ctx, ln, http.NotFoundHandler(), Limits{MaxConns: 3, ReadHeaderTimeout: time.Minute}, time.Second, nil)
	}()
	defer func() { cancel(); <-done }()
	var conns []net.Conn
	for i := 0; i < 10; i++ {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 2, byte(i+1))}}
		c, err := d.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\n") // headers never end
		conns = append(conns, c)
	}
	var open atomic.Int32
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
			_, err := io.Copy(io.Discard, c)
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				open.Add(1)
			}
		}()
	}
	wg.Wait()
	if n := open.Load(); n != 3 {
		t.Fatalf("%d connections held open, want the cap, 3", n)
	}
}

// TestNoHTTP2: a guarded server speaks HTTP/1 only, over TLS too, so that
// its connection caps bound the requests a client holds at once (one
// HTTP/2 connection carries up to 250). The control: a plain server with
// the same TLS setup and client speaks HTTP/2.
func TestNoHTTP2(t *testing.T) {
	ts := httptest.NewTLSServer(http.NotFoundHandler()) // for its certificate
	ts.Close()
	roots := x509.NewCertPool()
	roots.AddCert(ts.Certificate())
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}, ForceAttemptHTTP2: true}}
	proto := func(srv *http.Server) int {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv.TLSConfig = &tls.Config{Certificates: ts.TLS.Certificates}
		go srv.ServeTLS(ln, "", "")
		defer srv.Close()
		resp, err := client.Get("https://" + ln.Addr().String() + "/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.ProtoMajor
	}
	if got := proto(&http.Server{Handler: http.NotFoundHandler()}); got != 2 {
		t.Fatalf("control: a plain server spoke HTTP/%d, want 2", got)
	}
	if got := proto(Server(http.NotFoundHandler(), Limits{}, nil)); got != 1 {
		t.Fatalf("a guarded server spoke HTTP/%d, want 1", got)
	}
}

func TestClipAndEvery(t *testing.T) {
	if got := Clip(strings.Repeat("a", 1000), 8); got != "aaaaaaaa…(1000 bytes)" {
		t.Fatalf("Clip: %q", got)
	}
	if Clip("short", 8) != "short" {
		t.Fatal("Clip changed a short value")
	}
	e := NewEvery(time.Hour)
	if _, ok := e.Allow(); !ok {
		t.Fatal("first event held back")
	}
	for i := 0; i < 5; i++ {
		if _, ok := e.Allow(); ok {
			t.Fatal("event let through within the period")
		}
	}
}
