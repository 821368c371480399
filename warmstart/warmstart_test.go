package warmstart

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nixos-fireactions/nixos-fireactions/vmm"
)

var key = Key{VMM: "qemu 7.2.22", Kernel: "sha256:k", Image: "sha256:i", Agent: "sha256:a"}

// sealed is a template directory holding a sealed state of n bytes.
func sealed(t *testing.T, n int) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, StateFile), bytes.Repeat([]byte{7}, n), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Seal(dir, key); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestOpenRestoresOnlyAWholeTemplateOfTheSameKey(t *testing.T) {
	dir := sealed(t, 4096)
	tpl, err := Open(dir, key)
	if err != nil || tpl.State != filepath.Join(dir, StateFile) {
		t.Fatalf("a whole template of the same key: %v, %+v", err, tpl)
	}
	other := func(f func(*Key)) Key { k := key; f(&k); return k }
	cases := []struct {
		name  string
		dir   func() string
		want  Key
		rsn   Reason
		words string
	}{
		{"no template", t.TempDir, key, ReasonNoTemplate, "no template"},
		{"other QEMU", func() string { return sealed(t, 10) }, other(func(k *Key) { k.VMM = "qemu 8.2.0" }), ReasonVMMMismatch, `"qemu 7.2.22"`},
		{"other kernel", func() string { return sealed(t, 10) }, other(func(k *Key) { k.Kernel = "sha256:k2" }), ReasonKernelMismatch, "kernel"},
		{"other image", func() string { return sealed(t, 10) }, other(func(k *Key) { k.Image = "sha256:i2" }), ReasonImageMismatch, "image"},
		{"other agent", func() string { return sealed(t, 10) }, other(func(k *Key) { k.Agent = "sha256:a2" }), ReasonAgentMismatch, "agent"},
		{"state missing", func() string {
			d := sealed(t, 10)
			os.Remove(filepath.Join(d, StateFile))
			return d
		}, key, ReasonStateMissing, StateFile},
		{"state truncated", func() string {
			d := sealed(t, 4096)
			os.Truncate(filepath.Join(d, StateFile), 1000)
			return d
		}, key, ReasonStateTruncated, "1000 bytes, the template saved 4096"},
		{"manifest garbage", func() string {
			d := sealed(t, 10)
			os.WriteFile(filepath.Join(d, ManifestFile), []byte("{"), 0o600)
			return d
		}, key, ReasonBadManifest, ManifestFile},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tpl, err := Open(c.dir(), c.want)
			var f *Fallback
			if !errors.As(err, &f) || tpl != nil {
				t.Fatalf("got %+v, %v; want a Fallback", tpl, err)
			}
			if f.Reason != c.rsn || !strings.Contains(err.Error(), c.words) {
				t.Fatalf("got %q (%s), want reason %s naming %q", err, f.Reason, c.rsn, c.words)
			}
		})
	}
}

// A state file whose save did not finish has no manifest: no template.
func TestAStateWithoutItsSealIsNoTemplate(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, StateFile), []byte("half"), 0o600)
	if _, err := Open(dir, key); AsFallback(err).Reason != ReasonNoTemplate {
		t.Fatalf("unsealed state: %v", err)
	}
}

type counts map[string]int

func (c counts) WarmStartFallback(pool string, r Reason) { c[pool+"/"+string(r)]++ }

func TestChooserLogsAndCountsEachColdBoot(t *testing.T) {
	var log bytes.Buffer
	n := counts{}
	build := sealed(t, 10)
	c := &Chooser{Pool: "p", Log: slog.New(slog.NewTextHandler(&log, nil)), Metrics: n}
	if c.Template(context.Background(), "vm1", build, key) == nil {
		t.Fatal("the pool's own template was not chosen")
	}
	if len(n) != 0 || log.Len() != 0 {
		t.Fatalf("a warm start logged %q, counted %v", log.String(), n)
	}
	k := key
	k.Kernel = "sha256:new"
	if c.Template(context.Background(), "vm2", build, k) != nil {
		t.Fatal("a template of another kernel was chosen")
	}
	c.ColdBoot(context.Background(), "vm3", errors.New("qemu: load state: exit status 1"))
	if n["p/kernel_mismatch"] != 1 || n["p/restore_failed"] != 1 {
		t.Fatalf("counted %v", n)
	}
	for _, w := range []string{"vm=vm2", "reason=kernel_mismatch", "vm=vm3", "reason=restore_failed", "pool=p"} {
		if !strings.Contains(log.String(), w) {
			t.Errorf("log lacks %q:\n%s", w, log.String())
		}
	}
}

// sealedWithMemory is a template directory holding a sealed state of 10
// bytes and a memory file of n.
func sealedWithMemory(t *testing.T, n int64) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, StateFile), []byte("devices..."), 0o600); err != nil {
		t.Fatal(err)
	}
	mem := filepath.Join(dir, MemoryFile)
	if err := os.WriteFile(mem, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(mem, n); err != nil {
		t.Fatal(err)
	}
	if err := Seal(dir, key); err != nil {
		t.Fatal(err)
	}
	return dir
}

// The memory file is part of a template that has one: missing or of
// another size than sealed, no template (the VM boots cold, the reason
// naming the file); a whole one is the Template's Memory. A template
// sealed without one has none (its state holds the RAM).
func TestATemplatesMemoryFileIsPartOfIt(t *testing.T) {
	dir := sealedWithMemory(t, 1<<20)
	tpl, err := Open(dir, key)
	if err != nil || tpl.Memory != filepath.Join(dir, MemoryFile) {
		t.Fatalf("a whole template with its memory: %v, %+v", err, tpl)
	}
	if tpl, err := Open(sealed(t, 10), key); err != nil || tpl.Memory != "" {
		t.Fatalf("a template without a memory file: %v, %+v", err, tpl)
	}
	for _, c := range []struct {
		name  string
		spoil func(mem string)
		rsn   Reason
		words string
	}{
		{"missing", func(mem string) { os.Remove(mem) }, ReasonStateMissing, MemoryFile},
		{"truncated", func(mem string) { os.Truncate(mem, 4096) }, ReasonStateTruncated, "memory is 4096 bytes, the template saved 1048576"},
		{"emptied", func(mem string) { os.Truncate(mem, 0) }, ReasonStateTruncated, "memory is 0 bytes"},
		{"grown", func(mem string) { os.Truncate(mem, 2<<20) }, ReasonStateTruncated, "memory is 2097152 bytes"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := sealedWithMemory(t, 1<<20)
			c.spoil(filepath.Join(dir, MemoryFile))
			tpl, err := Open(dir, key)
			if err == nil || AsFallback(err).Reason != c.rsn || !strings.Contains(err.Error(), c.words) {
				t.Fatalf("got %+v, %v; want reason %s naming %q", tpl, err, c.rsn, c.words)
			}
		})
	}
	empty := t.TempDir()
	os.WriteFile(filepath.Join(empty, StateFile), []byte("x"), 0o600)
	os.WriteFile(filepath.Join(empty, MemoryFile), nil, 0o600)
	if err := Seal(empty, key); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Fatalf("sealing an empty memory file: %v", err)
	}
}

// TestChooserAsksToRebuildTheDamagedBuildItWasGiven: a build whose files
// are damaged is named in the Rebuild call (the pool may have published
// another since); one made from another key asks for no rebuild.
func TestChooserAsksToRebuildTheDamagedBuildItWasGiven(t *testing.T) {
	var asked []string
	c := &Chooser{Pool: "p", Rebuild: func(build string) { asked = append(asked, build) }}
	build := sealed(t, 10)
	k := key
	k.Kernel = "sha256:new"
	if c.Template(context.Background(), "vm1", build, k) != nil || len(asked) != 0 {
		t.Fatalf("a template of another kernel: rebuild asked for %v; want none", asked)
	}
	os.Truncate(filepath.Join(build, StateFile), 5)
	if c.Template(context.Background(), "vm2", build, key) != nil {
		t.Fatal("a truncated template was chosen")
	}
	if len(asked) != 1 || asked[0] != build {
		t.Fatalf("rebuild asked for %v; want [%s], the damaged build", asked, build)
	}
}

// TestAGuestsRefusalOfItsIdentityHasItsOwnReason: a restore that failed
// because the guest refused its identity (vmm.ErrIdentityRefused, however
// deeply wrapped) is ReasonIdentityRefused, its detail the whole error;
// a handover that failed otherwise stays ReasonRestoreFailed.
func TestAGuestsRefusalOfItsIdentityHasItsOwnReason(t *testing.T) {
	refused := fmt.Errorf("send identity: %w", fmt.Errorf("qemu: send identity: %w", vmm.ErrIdentityRefused))
	if f := AsFallback(refused); f.Reason != ReasonIdentityRefused || f.Detail != refused.Error() {
		t.Errorf("AsFallback(%v) = %+v; want %s with the error as its detail", refused, f, ReasonIdentityRefused)
	}
	unanswered := errors.New("send identity: qemu: send identity: no acknowledgement from the guest: no answer")
	if f := AsFallback(unanswered); f.Reason != ReasonRestoreFailed {
		t.Errorf("AsFallback(%v) = %+v; want %s", unanswered, f, ReasonRestoreFailed)
	}
}
