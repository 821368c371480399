package daemon

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/api"
	"github.com/nixos-fireactions/nixos-fireactions/config"
)

// testLimits are the defaults with a short read timeout, so a slow client
// is cut within the test's patience.
func testLimits(perSource int) config.Limits {
	l := config.Defaults().Limits
	l.ReadTimeout = 500 * time.Millisecond
	l.AgentConnsPerSource = perSource
	return l
}

// startAgentListener serves h as serve does the agent listener.
func startAgentListener(t *testing.T, h http.Handler, perSource int) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := testLimits(perSource)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = serveHTTP(ctx, ln, h, serverLimits(l, l.AgentConnsPerSource), slog.New(slog.DiscardHandler))
	}()
	t.Cleanup(func() { cancel(); <-done })
	return ln.Addr().String()
}

// newTestAPIHandler is the API as serve builds it for TCP.
func newTestAPIHandler(o api.Options) http.Handler {
	l := config.Defaults().Limits
	o.WebhookMaxBody, o.WebhookBuffer = l.WebhookMaxBody, l.WebhookBuffer
	return api.NewHandler(o, true)
}

// config_defaultsForBench are the default limits with a 2 s read timeout.
func config_defaultsForBench() config.Limits {
	l := config.Defaults().Limits
	l.ReadTimeout = 2 * time.Second
	return l
}
