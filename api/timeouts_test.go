package api

import (
	"bufio"
	"context"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/httpguard"
)

// TestConsoleFollowOutlivesServerTimeouts: the server's read and write
// timeouts (which cut slow clients) do not end a console stream.
func TestConsoleFollowOutlivesServerTimeouts(t *testing.T) {
	h, b, _ := newTestHandler(t, false)
	path := filepath.Join(t.TempDir(), "console.log")
	if err := os.WriteFile(path, []byte("boot\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	b.consoles["vm1"] = path
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = serve(ctx, ln, h, nil, httpguard.Limits{ReadTimeout: 200 * time.Millisecond, WriteTimeout: 200 * time.Millisecond}, slog.New(slog.DiscardHandler))
	}()
	defer func() { cancel(); <-done }()

	resp, err := http.Get("http://" + ln.Addr().String() + "/api/v1/vms/vm1/console?tail=1&follow=1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	lines := make(chan string, 4)
	go func() {
		br := bufio.NewReader(resp.Body)
		for {
			l, err := br.ReadString('\n')
			if err != nil {
				close(lines)
				return
			}
			lines <- l
		}
	}()
	if l := <-lines; l != "boot\n" {
		t.Fatalf("first line %q", l)
	}
	time.Sleep(time.Second) // five times both timeouts
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("later\n")
	f.Close()
	select {
	case l, ok := <-lines:
		if !ok || l != "later\n" {
			t.Fatalf("after the timeouts: %q (stream open: %v)", l, ok)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no line after the timeouts")
	}
}
