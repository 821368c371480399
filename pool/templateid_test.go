package pool

import (
	"strings"
	"testing"

	"github.com/nixos-fireactions/nixos-fireactions/netplan"
)

// TestTwoDaemonsOnAHostNeverShareATemplateID: two orchestrators on one
// host (their own state, so their own template directories) with a pool
// of the same name name its template VM differently, so neither one's
// reapTemplates ends the other's template; a restart of one daemon
// names it as before, so its own leftover is still found. The id is a
// TAP name's "tp" and 10 hex digits.
func TestTwoDaemonsOnAHostNeverShareATemplateID(t *testing.T) {
	a := &Manager{d: Deps{TemplateDir: "/var/lib/fireactions-a/templates"}}
	b := &Manager{d: Deps{TemplateDir: "/var/lib/fireactions-b/templates"}}
	restarted := &Manager{d: Deps{TemplateDir: "/var/lib/fireactions-a/templates"}}
	ida, idb := a.templateID("p"), b.templateID("p")
	if ida == idb {
		t.Errorf("two daemons' pools p share the template id %s", ida)
	}
	if got := restarted.templateID("p"); got != ida {
		t.Errorf("a restart renamed the template of pool p from %s to %s", ida, got)
	}
	for _, id := range []string{ida, idb} {
		if len(id) != 12 || !strings.HasPrefix(id, "tp") || strings.Trim(id[2:], "0123456789abcdef") != "" {
			t.Errorf("template id %q: want tp and 10 hex digits", id)
		}
		if _, err := netplan.TAPName(id); err != nil {
			t.Errorf("template id %q names no TAP: %v", id, err)
		}
	}
}
