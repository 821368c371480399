package daemon

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
	"github.com/nixos-fireactions/nixos-fireactions/config"
	"github.com/nixos-fireactions/nixos-fireactions/metrics"
	"github.com/nixos-fireactions/nixos-fireactions/pool"
	"github.com/nixos-fireactions/nixos-fireactions/vmstate"
)

// A reload that changes pool p's guest root and adds image pool q, whose
// registry refuses, changes nothing: p goes on building its VMs from the
// boot archive it had (its old root), not from the one the refused
// configuration would have made.
func TestReloadRefusedForAnImagePullLeavesTheBootArchivesInUse(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	kernel := write("bzImage", "kernel")
	oldRoot, newRoot := write("old.cpio", "OLD-ROOT-ARCHIVE"), write("new.cpio", "NEW-ROOT-ARCHIVE")
	token := write("token", "gitea-token")
	agent := write("agent", "agent binary")
	state := filepath.Join(dir, "state")
	conf := func(root, extra string) string {
		return write("config.yaml", fmt.Sprintf(`host_id: h
state_dir: %s
images: {dir: %s}
forges: [{name: g, type: gitea, url: "http://127.0.0.1:3000", token_file: %s}]
pools:
  - name: p
    forge: g
    labels: [linux]
    vm: {kernel: %s, root_initramfs: %s}
%s`, state, filepath.Join(dir, "images"), token, kernel, root, extra))
	}
	running, err := config.Load(conf(oldRoot, ""))
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	boot, err := newBootFiles(running, agent, filepath.Join(state, "pools"))
	if err != nil {
		t.Fatal(err)
	}
	roots, err := openImageRoots(running, log)
	if err != nil {
		t.Fatal(err)
	}
	defer roots.Close()
	drivers, forges, err := connectForges(running, "dev")
	if err != nil {
		t.Fatal(err)
	}
	store, err := vmstate.Open(filepath.Join(state, "vms"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := pool.New(pool.Deps{Config: running, Forges: forges, Store: store, Boot: boot, Roots: roots, Log: log})
	if err != nil {
		t.Fatal(err)
	}

	path := conf(newRoot, `  - name: q
    forge: g
    labels: [linux]
    runner: {path: /bin/act_runner}
    vm: {kernel: `+kernel+`, image: "127.0.0.1:1/ci/runner:v1"}
`)
	err = reload(t.Context(), Options{ConfigPath: path, Version: "dev"}, running, m, boot, metrics.New(t.TempDir()), drivers, log)
	if err == nil || !strings.Contains(err.Error(), `pool "q"`) {
		t.Fatalf("reload adding an image pool whose registry is down: %v, want refused naming pool q", err)
	}

	dst := filepath.Join(dir, "vm-initramfs")
	if err := boot.WriteVM("p", dst, agentproto.Config{VMID: "0000000000a1"}); err != nil {
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
