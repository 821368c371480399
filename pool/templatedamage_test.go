package pool

import (
	"io"
	"log/slog"
	"testing"
)

// TestAReportAboutAReplacedBuildIsIgnored: a VM acquired build 1 and
// found it wrong (its files damaged, or booted from another image than
// the VM's), but build 2 was published before it reported: the report is
// stale, build 2 stays acquirable and is not rebuilt. A report about the
// published build still takes it out of use.
func TestAReportAboutAReplacedBuildIsIgnored(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for name, report := range map[string]func(w *warmPool, build string){
		"damaged":        func(w *warmPool, build string) { w.damaged(build, log) },
		"image moved on": func(w *warmPool, build string) { w.rebuild(build, log) },
	} {
		t.Run(name, func(t *testing.T) {
			w := &warmPool{name: "p", ok: true, build: "/t/p/1", seen: "files v1"}
			_, _, first, ok := w.acquire()
			if !ok || first != "/t/p/1" {
				t.Fatalf("acquire: build %q, ok %v; want /t/p/1", first, ok)
			}
			// Build 2 published, as ensureTemplate does once it is built.
			w.mu.Lock()
			w.build, w.seen = "/t/p/2", "files v2"
			w.mu.Unlock()

			report(w, first)
			_, _, build, ok := w.acquire()
			if !ok || build != "/t/p/2" {
				t.Fatalf("after a report about build 1: acquire gives %q, ok %v; want build 2, ok", build, ok)
			}
			w.release(build)
			w.mu.Lock()
			seen := w.seen
			w.mu.Unlock()
			if seen != "files v2" {
				t.Errorf("after a report about build 1 the files seen are %q; want %q (no rebuild)", seen, "files v2")
			}

			report(w, "/t/p/2")
			if _, _, build, ok := w.acquire(); ok {
				t.Errorf("after a report about the published build: acquire gives %q, ok; want no template", build)
			}
		})
	}
}
