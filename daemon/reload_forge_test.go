package daemon

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/nixos-fireactions/nixos-fireactions/metrics"
)

// A reload that adds forge h and a pool of it that the manager refuses
// (its image cannot be pulled) leaves no driver for h: the corrected
// reload builds h's driver from its own settings, not the refused ones.
// A running forge whose settings changed keeps its driver, and the log
// names it as needing a restart.
func TestARefusedReloadLeavesNoDriverOfTheForgeItAdded(t *testing.T) {
	r := newReloadRig(t)
	root := r.write("root.cpio", "ROOT-ARCHIVE")
	conf := func(gURL, forges, pools string) string { return r.config(gURL, root, forges, pools) }
	var logged bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logged, nil))
	running := r.start(conf("http://127.0.0.1:3000", "", ""), log)
	m, boot, drivers := r.m, r.boot, r.drivers
	mx := metrics.New(t.TempDir())
	forgeH := func(url string) string {
		return fmt.Sprintf("  - {name: h, type: gitea, url: %q, token_file: %s}\n", url, r.token)
	}

	refused := conf("http://127.0.0.1:3000", forgeH("http://refused.invalid:3000"), `  - name: q
    forge: h
    labels: [linux]
    runner: {path: /bin/act_runner}
    vm: {kernel: `+r.kernel+`, image: "127.0.0.1:1/ci/runner:v1"}
`)
	err := reload(t.Context(), Options{ConfigPath: refused, Version: "dev"}, running, m, boot, mx, drivers, log)
	if err == nil || !strings.Contains(err.Error(), `pool "q"`) {
		t.Fatalf("reload adding a pool whose registry is down: %v, want refused naming pool q", err)
	}
	if _, ok := drivers.drivers["h"]; ok {
		t.Fatal("the refused reload left a driver of forge h, built from its settings")
	}

	corrected := conf("http://127.0.0.1:3999", forgeH("http://127.0.0.1:3001"), `  - name: q
    forge: h
    labels: [linux]
    vm: {kernel: `+r.kernel+`, root_initramfs: `+root+`}
`)
	logged.Reset()
	if err := reload(t.Context(), Options{ConfigPath: corrected, Version: "dev"}, running, m, boot, mx, drivers, log); err != nil {
		t.Fatalf("corrected reload: %v", err)
	}
	if _, ok := drivers.drivers["h"]; !ok {
		t.Fatal("after the corrected reload forge h has no driver")
	}
	if got := drivers.built["h"].URL; got != "http://127.0.0.1:3001" {
		t.Fatalf("forge h's driver built from url %q, want the corrected http://127.0.0.1:3001", got)
	}
	if got := drivers.built["g"].URL; got != "http://127.0.0.1:3000" {
		t.Fatalf("forge g's driver: url %q, want the running http://127.0.0.1:3000 (a restart changes it)", got)
	}
	if !strings.Contains(logged.String(), "restart") || !strings.Contains(logged.String(), "forge=g") {
		t.Fatalf("forge g's changed url is not named as needing a restart; log:\n%s", logged.String())
	}
	if strings.Contains(logged.String(), "forge=h") {
		t.Fatalf("forge h, new, is said to need a restart; log:\n%s", logged.String())
	}
}
