package gitlab

import (
	"net/http"
	"testing"

	"github.com/nixos-fireactions/nixos-fireactions/forge"
)

// wrapped is a scope behind a wrapper, as the metrics wrap it.
type wrapped struct{ forge.Forge }

func (w wrapped) Unwrap() forge.Forge { return w.Forge }

// TestRetainKeepsOnlyTheScopesInUse: the scopes a reload asked for and did
// not use leave the driver's demand (found through wrappers); a driver
// whose pools are all gone answers its webhooks 404, as a forge without
// pools did.
func TestRetainKeepsOnlyTheScopesInUse(t *testing.T) {
	d, err := NewDriver("gl", Options{URL: "https://gitlab.example.com", Token: "glpat-x", WebhookSecret: "hook-secret"})
	if err != nil {
		t.Fatal(err)
	}
	var scopes []*Forge
	for range 3 {
		f, err := d.Scope(ScopeOptions{Scope: Scope{Kind: ScopeGroup, Path: "acme"}, Pool: "p"})
		if err != nil {
			t.Fatal(err)
		}
		scopes = append(scopes, f)
	}
	d.Retain([]forge.Forge{wrapped{scopes[1]}})
	if len(d.scopes) != 1 || d.scopes[0] != scopes[1] {
		t.Fatalf("after Retain the driver feeds %d scopes, want scopes[1] only", len(d.scopes))
	}
	other, err := NewDriver("other", Options{URL: "https://gitlab.example.com", Token: "glpat-x"})
	if err != nil {
		t.Fatal(err)
	}
	other.Retain([]forge.Forge{scopes[1]}) // another driver's scope: not kept
	d.Retain(nil)
	body := readTestdata(t, "job-hook-pending.json")
	if code, kicked := delivery(scopes[1], "Job Hook", "hook-secret", "u-1", body); code != http.StatusNotFound || kicked {
		t.Fatalf("a delivery to a forge without pools: %d, kicked %v; want 404", code, kicked)
	}
}
