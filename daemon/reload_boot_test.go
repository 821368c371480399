package daemon

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
	"github.com/nixos-fireactions/nixos-fireactions/metrics"
)

// A reload that changes pool p's guest root and adds image pool q, whose
// registry refuses, changes nothing: p goes on building its VMs from the
// boot archive it had (its old root), not from the one the refused
// configuration would have made.
func TestReloadRefusedForAnImagePullLeavesTheBootArchivesInUse(t *testing.T) {
	r := newReloadRig(t)
	oldRoot, newRoot := r.write("old.cpio", "OLD-ROOT-ARCHIVE"), r.write("new.cpio", "NEW-ROOT-ARCHIVE")
	log := slog.New(slog.DiscardHandler)
	running := r.start(r.config("http://127.0.0.1:3000", oldRoot, "", ""), log)

	path := r.config("http://127.0.0.1:3000", newRoot, "", `  - name: q
    forge: g
    labels: [linux]
    runner: {path: /bin/act_runner}
    vm: {kernel: `+r.kernel+`, image: "127.0.0.1:1/ci/runner:v1"}
`)
	err := reload(t.Context(), Options{ConfigPath: path, Version: "dev"}, running, r.m, r.boot, metrics.New(t.TempDir()), r.drivers, log)
	if err == nil || !strings.Contains(err.Error(), `pool "q"`) {
		t.Fatalf("reload adding an image pool whose registry is down: %v, want refused naming pool q", err)
	}

	dst := filepath.Join(r.dir, "vm-initramfs")
	if err := r.boot.WriteVM("p", dst, agentproto.Config{VMID: "0000000000a1"}); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(dst)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(got, []byte("OLD-ROOT-ARCHIVE")) || bytes.Contains(got, []byte("NEW-ROOT-ARCHIVE")) {
		t.Fatal("after the refused reload pool p builds its VMs from the refused configuration's boot archive")
	}
}
