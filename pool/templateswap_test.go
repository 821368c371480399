package pool

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/warmstart"
)

// build is the directory of the pool's published template build.
func (r *warmRig) build(t *testing.T) string {
	t.Helper()
	b, err := warmstart.Current(filepath.Join(r.tdir, "p"))
	if err != nil {
		t.Fatalf("the pool's template: %v", err)
	}
	return b
}

// entries are the names in the pool's template directory.
func (r *warmRig) entries() []string {
	es, _ := os.ReadDir(filepath.Join(r.tdir, "p"))
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

// waitFinished waits until n jobs finished.
func (r *warmRig) waitFinished(t *testing.T, n int) {
	t.Helper()
	eventually(t, 10*time.Second, "jobs finished", func() bool {
		r.forge.mu.Lock()
		defer r.forge.mu.Unlock()
		return len(r.forge.finished) >= n
	})
}

// loaded are the template numbers the fake VMM's restores loaded.
func (r *warmRig) loaded() []string {
	r.hv.mu.Lock()
	defer r.hv.mu.Unlock()
	return append([]string(nil), r.hv.loaded...)
}

// firstRestorePaused is a Deps option for newWarmRig: the fake VMM's
// first restore stops between reading the template's state and its
// memory file, closing paused, until end is called (more than once is
// fine: a test defers it, so a failure leaves no restore blocked).
func firstRestorePaused() (opt func(*Deps), paused <-chan struct{}, end func()) {
	pause, resume := make(chan struct{}), make(chan struct{})
	var once sync.Once
	opt = func(d *Deps) {
		d.Hypervisor.(*fakeHV).betweenStateAndMemory = func() {
			once.Do(func() { close(pause); <-resume })
		}
	}
	return opt, pause, sync.OnceFunc(func() { close(resume) })
}

// enqueuePaused enqueues job and waits, at most 10s, until its VM's
// restore reached the pause of firstRestorePaused.
func (r *warmRig) enqueuePaused(t *testing.T, job string, paused <-chan struct{}) {
	t.Helper()
	r.forge.enqueue(job)
	select {
	case <-paused:
	case <-time.After(10 * time.Second):
		t.Fatalf("the restore of job %s's VM did not reach its pause (fallbacks %v):\n%s", job, r.c.reasons, r.log.String())
	}
}

// swappedUnderARestore is a rig whose job j1's VM is restoring build 1
// of the pool's template, paused (firstRestorePaused), while the pool's
// kernel changed and build 2 was published; first is build 1's
// directory, endRestore ends the pause (the test's cleanup does too,
// before the rig's). deps are more Deps options.
func swappedUnderARestore(t *testing.T, deps ...func(*Deps)) (r *warmRig, first string, endRestore func()) {
	t.Helper()
	pause, paused, endRestore := firstRestorePaused()
	r = newWarmRig(t, 0, 1, t.TempDir(), "", append([]func(*Deps){pause}, deps...)...)
	t.Cleanup(endRestore) // cleanups run last first: before the rig's
	r.waitBuilds(t, 1)
	first = r.build(t)
	r.enqueuePaused(t, "j1", paused)
	// The pool's kernel changes (whole, in one rename): the next pass
	// rebuilds the template.
	if err := r.setKernel("kernel v2, longer"); err != nil {
		t.Fatal(err)
	}
	r.waitBuilds(t, 2)
	return r, first, endRestore
}

// TestARestoreTakesOneBuildsFiles: the template rebuilt while a restore
// has read the saved state and not yet the memory file (as QEMU opens
// the state as its fd 4, then maps the RAM file) leaves that restore
// with the memory of the build whose state it read (the fake VMM fails
// a restore that pairs two templates'); it resumes and runs its job, not
// a cold boot. The old build is removed once that restore is done, and
// the next VM restores from the new build.
func TestARestoreTakesOneBuildsFiles(t *testing.T) {
	r, first, endRestore := swappedUnderARestore(t)
	second := r.build(t)
	if second == first {
		t.Fatalf("the rebuild published the same build directory %s", first)
	}
	if _, err := os.Stat(filepath.Join(first, warmstart.MemoryFile)); err != nil {
		t.Fatalf("the build a restore is reading was removed: %v", err)
	}
	endRestore()
	r.waitFinished(t, 1)
	if n, got := r.hv.restores.Load(), r.loaded(); n != 1 || len(got) != 1 || got[0] != "template=1" {
		t.Fatalf("%d restores loaded %v; want 1, of template 1's state and memory (fallbacks %v)\n%s", n, got, r.c.reasons, r.log.String())
	}
	eventually(t, 5*time.Second, "the old build removed once no restore reads it", func() bool {
		_, err := os.Stat(first)
		return os.IsNotExist(err)
	})
	if got := strings.Join(r.entries(), " "); got != warmstart.CurrentLink+" "+filepath.Base(second) && got != filepath.Base(second)+" "+warmstart.CurrentLink {
		t.Errorf("the template directory holds %q; want the link and the new build", got)
	}
	r.forge.enqueue("j2")
	r.waitFinished(t, 2)
	if got := r.loaded(); len(got) != 2 || got[1] != "template=2" {
		t.Fatalf("restores loaded %v; want the next from the new build, template 2 (fallbacks %v)\n%s", got, r.c.reasons, r.log.String())
	}
	if err := r.drain(t, time.Second); err != nil {
		t.Fatal(err)
	}
	r.assertNothingLeft(t)
}

// copyBuild copies the files of build src into a new directory dst.
func copyBuild(t *testing.T, src, dst string) {
	t.Helper()
	if err := os.Mkdir(dst, 0o700); err != nil {
		t.Fatal(err)
	}
	es, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range es {
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// TestTemplateCrashLeftoversRemovedAtStart: whatever a crash left in a
// pool's template directory, a start finds the published build whole,
// adopts it (no new save) and restores from it, and removes the rest.
// A crash before a publish: a build never published (its state saved,
// no manifest), the temporary link, files of the layout before builds
// had their own directories. A crash after a publish, before the old
// build was pruned: the old build.
func TestTemplateCrashLeftoversRemovedAtStart(t *testing.T) {
	tdir := t.TempDir()
	pdir := filepath.Join(tdir, "p")
	first := newWarmRig(t, 0, 1, tdir, "")
	first.waitBuilds(t, 1)
	published := first.build(t)
	if err := first.drain(t, time.Second); err != nil {
		t.Fatal(err)
	}

	// Crashed before its publish.
	unpublished := filepath.Join(pdir, "7")
	if err := os.Mkdir(unpublished, 0o700); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(unpublished, warmstart.StateFile), []byte("half a state"), 0o600)
	os.Symlink("7", filepath.Join(pdir, warmstart.CurrentLink+".tmp"))
	for _, f := range []string{warmstart.StateFile, warmstart.MemoryFile, warmstart.ManifestFile} {
		os.WriteFile(filepath.Join(pdir, f), []byte("the old layout's"), 0o600)
	}
	again := newWarmRig(t, 0, 1, tdir, "")
	eventually(t, 5*time.Second, "template adopted", func() bool { return strings.Contains(again.log.String(), "template adopted") })
	again.runJobs(t, "j1")
	if s, n := again.hv.saves.Load(), again.hv.restores.Load(); s != 0 || n != 1 {
		t.Fatalf("after a crash before a publish: %d templates saved, %d VMs restored; want 0 and 1 (fallbacks %v)", s, n, again.c.reasons)
	}
	if got := again.build(t); got != published {
		t.Fatalf("the published build is %s; want %s, the one before the crash", got, published)
	}
	if got := strings.Join(again.entries(), " "); got != filepath.Base(published)+" "+warmstart.CurrentLink {
		t.Errorf("after a start the template directory holds %q; want the published build and the link", got)
	}
	if err := again.drain(t, time.Second); err != nil {
		t.Fatal(err)
	}

	// Crashed after a publish (a new build, here a copy of the old),
	// before the old build was pruned.
	next := filepath.Join(pdir, "8")
	copyBuild(t, published, next)
	if err := warmstart.Publish(next); err != nil {
		t.Fatal(err)
	}
	third := newWarmRig(t, 0, 1, tdir, "")
	eventually(t, 5*time.Second, "template adopted", func() bool { return strings.Contains(third.log.String(), "template adopted") })
	third.runJobs(t, "j1")
	third.hv.mu.Lock()
	last := third.hv.specs[len(third.hv.specs)-1]
	third.hv.mu.Unlock()
	if s, n := third.hv.saves.Load(), third.hv.restores.Load(); s != 0 || n != 1 || last.Restore != filepath.Join(next, warmstart.StateFile) {
		t.Fatalf("after a crash after a publish: %d saved, %d restored, the last from %q; want 0, 1, from %s", s, n, last.Restore, next)
	}
	if _, err := os.Stat(published); !os.IsNotExist(err) {
		t.Errorf("the build the publish replaced is left: %v", err)
	}
}

// setKernel replaces the pool's kernel, whole, in one rename.
func (r *warmRig) setKernel(content string) error {
	if err := os.WriteFile(r.kernel+".new", []byte(content), 0o644); err != nil {
		return err
	}
	return os.Rename(r.kernel+".new", r.kernel)
}

// TestARestoreEndingDuringABuildLeavesTheBuild: a restore of an old
// build that ends while a newer build is being made removes the old
// build, not the one being made, which is published whole.
func TestARestoreEndingDuringABuildLeavesTheBuild(t *testing.T) {
	saving, save := make(chan struct{}), make(chan struct{})
	endSave := sync.OnceFunc(func() { close(save) })
	defer endSave() // before the test's cleanups, the rig's among them
	r, first, endRestore := swappedUnderARestore(t, func(d *Deps) {
		d.Hypervisor.(*fakeHV).beforeSave = func(n int32) {
			if n == 3 {
				close(saving)
				<-save
			}
		}
	})
	if err := r.setKernel("kernel v3, longer still"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-saving:
	case <-time.After(5 * time.Second):
		t.Fatalf("no third build began:\n%s", r.log.String())
	}
	endRestore() // the restore of build 1 ends while build 3 is under way
	eventually(t, 5*time.Second, "the first build removed once its restore ended", func() bool {
		_, err := os.Stat(first)
		return os.IsNotExist(err)
	})
	endSave()
	r.waitBuilds(t, 3)
	third := r.build(t)
	if filepath.Base(third) != "3" {
		t.Fatalf("published %s; want the third build", third)
	}
	if _, err := os.Stat(filepath.Join(third, warmstart.ManifestFile)); err != nil {
		t.Fatalf("the third build is not whole: %v", err)
	}
	r.forge.enqueue("j2")
	r.waitFinished(t, 2)
	if got := r.loaded(); len(got) != 2 || got[0] != "template=1" || got[1] != "template=3" {
		t.Fatalf("restores loaded %v; want template 1's, then template 3's (fallbacks %v)", got, r.c.reasons)
	}
}
