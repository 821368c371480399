package pool

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/vmm"
	"github.com/nixos-fireactions/nixos-fireactions/warmstart"
)

// driveIDs are spec's drives' IDs, in order.
func driveIDs(s vmm.Spec) []string {
	var ids []string
	for _, d := range s.Drives {
		ids = append(ids, d.ID)
	}
	return ids
}

// TestImagePoolRestoresFromATemplateOfItsImage: an image pool's template
// boots with its VMs' drives (the image, a writable disk), in their order,
// with a bare template's config (no root, no credential); its VMs are
// restores of it, each with its own writable disk; the build's lease on
// the image is given back. When the pool's image moves to another digest
// the next VM boots cold (image_mismatch: the template's kernel probed the
// old image's drive), the template is rebuilt with a key of the new
// digest, and the VMs after are restores of that one; the same again when
// the image's file is flattened anew under the same digest.
func TestImagePoolRestoresFromATemplateOfItsImage(t *testing.T) {
	roots := &fakeRoots{imageDir: t.TempDir()}
	for _, d := range []string{fakeDigest, "sha256:moved"} {
		if err := os.WriteFile(filepath.Join(roots.imageDir, d), []byte("flattened "+d), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	r := newWarmRig(t, 0, 1, t.TempDir(), "", func(d *Deps) { d.Roots = roots })
	r.waitBuilds(t, 1)
	r.runJobs(t, "j1", "j2")
	if n := r.hv.restores.Load(); n != 2 {
		t.Fatalf("%d VMs restored; want 2 (fallbacks %v)\n%s", n, r.c.reasons, r.log.String())
	}
	tid := r.m.templateID("p")
	if c := r.boot.Config(""); !c.Template || c.Root != nil {
		t.Fatalf("the template's config is not a bare template's: %+v", c)
	}
	r.hv.mu.Lock()
	var tspec vmm.Spec
	var restored []vmm.Spec
	for _, s := range r.hv.specs {
		switch {
		case s.ID == tid:
			tspec = s
		case s.Restore != "":
			restored = append(restored, s)
		}
	}
	r.hv.mu.Unlock()
	want := []string{"fa-image", "fa-writable"}
	if !slices.Equal(driveIDs(tspec), want) || tspec.Drives[0].Path != filepath.Join(roots.imageDir, fakeDigest) {
		t.Fatalf("the template booted with drives %+v; want %v, the image %s first", tspec.Drives, want, fakeDigest)
	}
	for _, s := range restored {
		if !slices.Equal(driveIDs(s), want) {
			t.Errorf("restore %s has drives %v, its template %v", s.ID, driveIDs(s), want)
		}
	}
	if _, err := os.Stat(filepath.Join(r.build(t), "writable.img")); err == nil {
		t.Error("the template kept a writable disk")
	}

	before, _ := os.ReadFile(filepath.Join(r.build(t), warmstart.ManifestFile))
	roots.mu.Lock()
	roots.images = map[string]string{"p": "sha256:moved"}
	roots.mu.Unlock()
	r.finishJob(t, "j3", 3)
	if n := r.c.count(warmstart.ReasonImageMismatch); n != 1 {
		t.Fatalf("image_mismatch counted %d times; want 1 (all: %v)\n%s", n, r.c.reasons, r.log.String())
	}
	if n := r.hv.restores.Load(); n != 2 {
		t.Fatalf("a VM of the moved image was restored from the old image's template (%d restores)", n)
	}
	r.waitBuilds(t, 2)
	after, _ := os.ReadFile(filepath.Join(r.build(t), warmstart.ManifestFile))
	if bytes.Equal(before, after) {
		t.Fatal("the template was not rebuilt for the moved image: its key does not cover the image's digest")
	}
	r.finishJob(t, "j4", 4)
	if n := r.hv.restores.Load(); n != 3 {
		t.Fatalf("%d restores; want the VM after the rebuild restored too (fallbacks %v)", n, r.c.reasons)
	}
	r.hv.mu.Lock()
	last := r.hv.specs[len(r.hv.specs)-1]
	r.hv.mu.Unlock()
	if last.Drives[0].Path != filepath.Join(roots.imageDir, "sha256:moved") || last.Restore != filepath.Join(r.build(t), warmstart.StateFile) {
		t.Fatalf("the last VM: %+v", last)
	}

	// The same digest flattened again (pulled after an eviction): another
	// file, whose first blocks the template's kernel did not read.
	img := filepath.Join(roots.imageDir, "sha256:moved")
	os.Remove(img)
	if err := os.WriteFile(img, []byte("flattened again"), 0o644); err != nil {
		t.Fatal(err)
	}
	r.finishJob(t, "j5", 5)
	if n, m := r.hv.restores.Load(), r.c.count(warmstart.ReasonImageMismatch); n != 3 || m != 2 {
		t.Fatalf("after the image was flattened again: %d restores, %d image_mismatch; want 3 and 2 (the VM boots cold)", n, m)
	}
	r.waitBuilds(t, 3)
	r.finishJob(t, "j6", 6)
	if n := r.hv.restores.Load(); n != 4 {
		t.Fatalf("%d restores; want the VM after the second rebuild restored (fallbacks %v)", n, r.c.reasons)
	}
	if err := r.drain(t, time.Second); err != nil {
		t.Fatal(err)
	}
	r.assertNothingLeft(t)
	if p, rel := roots.counts(); p != rel {
		t.Fatalf("%d roots prepared, %d released: a template build kept its lease", p, rel)
	}
}

// finishJob runs job id and waits until n jobs in all have finished.
func (r *warmRig) finishJob(t *testing.T, id string, n int) {
	t.Helper()
	r.forge.enqueue(id)
	eventually(t, 10*time.Second, id+" finished", func() bool {
		r.forge.mu.Lock()
		defer r.forge.mu.Unlock()
		return len(r.forge.finished) >= n
	})
}
