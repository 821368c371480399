package daemon

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/nixos-fireactions/nixos-fireactions/forge"
)

// recordingForge is a forge driver that takes webhooks and remembers them.
type recordingForge struct {
	forge.Forge
	status int
	bodies []string
}

func (f *recordingForge) ServeWebhook(w http.ResponseWriter, r *http.Request, kick func()) {
	b, _ := io.ReadAll(r.Body)
	f.bodies = append(f.bodies, string(b))
	kick()
	w.WriteHeader(f.status)
}

// TestWebhooksReachEveryPoolOfTheForge: a delivery goes to each pool driver
// of its forge (with the whole body each time), the first one answers, and
// a reload's routes replace the old drivers.
func TestWebhooksReachEveryPoolOfTheForge(t *testing.T) {
	a, b := &recordingForge{status: 200}, &recordingForge{status: 401}
	other := &recordingForge{status: 200}
	routes := &webhookRoutes{}
	routes.set(map[string]forge.Forge{"pa": a, "pb": b, "po": other},
		map[string]string{"pa": "gl", "pb": "gl", "po": "gh"})
	recv := routes.receivers([]string{"gl", "gh", "none"})

	kicks := 0
	w := httptest.NewRecorder()
	recv["gl"].ServeWebhook(w, httptest.NewRequest(http.MethodPost, "/webhooks/gl", strings.NewReader("payload")), func() { kicks++ })
	if len(a.bodies) != 1 || len(b.bodies) != 1 || a.bodies[0] != "payload" || b.bodies[0] != "payload" {
		t.Fatalf("deliveries: a=%v b=%v", a.bodies, b.bodies)
	}
	if len(other.bodies) != 0 {
		t.Fatal("another forge's driver got the delivery")
	}
	if kicks != 2 || w.Code != 200 {
		t.Fatalf("kicks %d, answer %d", kicks, w.Code)
	}

	w = httptest.NewRecorder()
	recv["none"].ServeWebhook(w, httptest.NewRequest(http.MethodPost, "/webhooks/none", strings.NewReader("x")), func() {})
	if w.Code != http.StatusNotFound {
		t.Fatalf("a forge without webhook drivers answered %d", w.Code)
	}

	fresh := &recordingForge{status: 202}
	routes.set(map[string]forge.Forge{"pa": fresh}, map[string]string{"pa": "gl"})
	w = httptest.NewRecorder()
	recv["gl"].ServeWebhook(w, httptest.NewRequest(http.MethodPost, "/webhooks/gl", strings.NewReader("again")), func() {})
	if len(fresh.bodies) != 1 || len(a.bodies) != 1 || w.Code != 202 {
		t.Fatalf("after a reload: fresh=%v old=%v code=%d", fresh.bodies, a.bodies, w.Code)
	}
}
