package gitlab

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
)

// TestDeliveryIDsAreBounded: deliveries with 1 MB ids (a valid token: the
// forge, or someone who has the hook's secret) never put them into the
// de-dup ring, which stays within recentSize ids of bounded length; a
// normal id is still de-duplicated.
func TestDeliveryIDsAreBounded(t *testing.T) {
	e := newEnv(t, Scope{Kind: ScopeProject, Path: "acme/app"})
	body := readTestdata(t, "job-hook-pending.json")
	long := strings.Repeat("k", 1<<20)
	for i := 0; i < 20; i++ {
		if code, _ := delivery(e.f, "Job Hook", "hook-secret", long+strconv.Itoa(i), body); code != http.StatusBadRequest {
			t.Errorf("a 1 MB delivery id: %d, want 400", code)
		}
	}
	held := 0
	e.f.d.mu.Lock()
	for _, k := range e.f.d.seen.keys {
		held += len(k)
	}
	e.f.d.mu.Unlock()
	if held > recentSize*128 {
		t.Fatalf("the de-dup ring holds %d bytes of ids", held)
	}
	if code, _ := delivery(e.f, "Job Hook", "hook-secret", "6f1e", body); code != http.StatusNoContent {
		t.Fatalf("first delivery: %d", code)
	}
	if code, kicked := delivery(e.f, "Job Hook", "hook-secret", "6f1e", body); code != http.StatusNoContent || kicked {
		t.Fatalf("replay: %d, kicked %v", code, kicked)
	}
}
