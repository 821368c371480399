package warmstart

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func names(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var n []string
	for _, e := range es {
		n = append(n, e.Name())
	}
	return n
}

// A pool directory's builds: numbered above any there, current only once
// published, the link replaced whole; a link naming no build of the
// directory is refused.
func TestBuildsArePublishedByTheirLink(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "p")
	if _, err := Current(dir); AsFallback(err).Reason != ReasonNoTemplate {
		t.Fatalf("no pool directory: %v; want no_template", err)
	}
	b1, err := NewBuild(dir)
	if err != nil || filepath.Base(b1) != "1" {
		t.Fatalf("first build %q, %v", b1, err)
	}
	if _, err := Current(dir); AsFallback(err).Reason != ReasonNoTemplate {
		t.Fatalf("a build not published is current: %v", err)
	}
	if err := Publish(b1); err != nil {
		t.Fatal(err)
	}
	os.Mkdir(filepath.Join(dir, "9"), 0o700) // a crashed build's
	b2, err := NewBuild(dir)
	if err != nil || filepath.Base(b2) != "10" {
		t.Fatalf("the build after a leftover 9: %q, %v; want 10", b2, err)
	}
	if c, err := Current(dir); err != nil || c != b1 {
		t.Fatalf("current %q, %v; want %s until the next publish", c, err, b1)
	}
	if err := Publish(b2); err != nil {
		t.Fatal(err)
	}
	if c, err := Current(dir); err != nil || c != b2 {
		t.Fatalf("current %q, %v; want %s", c, err, b2)
	}
	if got := names(t, dir); !slices.Equal(got, []string{"1", "10", "9", CurrentLink}) {
		t.Fatalf("the directory holds %v (a temporary link left?)", got)
	}
	if err := Publish(filepath.Join(dir, "x")); err == nil {
		t.Fatal("published a directory not named as a build")
	}
	for _, bad := range []string{"../q/1", "/etc", "x", "01"} {
		os.Remove(filepath.Join(dir, CurrentLink))
		os.Symlink(bad, filepath.Join(dir, CurrentLink))
		if _, err := Current(dir); AsFallback(err).Reason != ReasonBadManifest {
			t.Errorf("a link to %q: %v; want bad_manifest", bad, err)
		}
	}
}

// Prune keeps the link, the build it names and the builds the caller
// keeps; everything else goes, whatever keep says of names not a
// build's.
func TestPruneKeepsThePublishedAndTheKeptBuilds(t *testing.T) {
	dir := t.TempDir()
	for _, d := range []string{"1", "2", "3", "4"} {
		os.Mkdir(filepath.Join(dir, d), 0o700)
		os.WriteFile(filepath.Join(dir, d, StateFile), []byte("s"), 0o600)
	}
	if err := Publish(filepath.Join(dir, "3")); err != nil {
		t.Fatal(err)
	}
	os.Symlink("4", filepath.Join(dir, CurrentLink+".tmp"))
	os.WriteFile(filepath.Join(dir, ManifestFile), []byte("{}"), 0o600)
	removed, err := Prune(dir, func(b string) bool { return b == filepath.Join(dir, "2") || filepath.Base(b) == ManifestFile })
	if err != nil {
		t.Fatal(err)
	}
	if got := names(t, dir); !slices.Equal(got, []string{"2", "3", CurrentLink}) {
		t.Fatalf("left %v (removed %v); want the kept 2, the published 3 and the link", got, removed)
	}
	if c, err := Current(dir); err != nil || c != filepath.Join(dir, "3") {
		t.Fatalf("current after a prune: %q, %v", c, err)
	}
	if removed, err := Prune(filepath.Join(dir, "none"), func(string) bool { return false }); err != nil || removed != nil {
		t.Fatalf("a pool directory that does not exist: %v, %v", removed, err)
	}
}
