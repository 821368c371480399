package imagestore

import (
	"testing"

	"github.com/nixos-fireactions/nixos-fireactions/internal/hosttest"
)

// A mirror URL's path is the repository prefix under which the cache
// serves the registry (Zot's sync keeps ghcr.io's images under
// /ghcr.io): the pull asks the mirror for prefix/repo and never asks the
// registry.
func TestMirrorWithARepositoryPrefix(t *testing.T) {
	hosttest.RequireRoot(t, flattenNeedsRoot)
	upstream := startRegistry(t)
	mirror := startRegistry(t)
	// The cache holds the registry's team/app under cache-of/upstream/.
	digest := oneFileImage(t, mirror.host, "cache-of/upstream/team/app:v1", "from the mirror")
	s, err := Open(Options{Dir: tempStoreDir(t), Mirrors: map[string][]string{
		RegistryKey(upstream.host): {"http://" + mirror.host + "/cache-of/upstream/"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	im, err := s.Pull(ctxBackground(), upstream.host+"/team/app:v1", PullAlways, nil)
	if err != nil {
		t.Fatalf("pull through a prefixed mirror: %v", err)
	}
	if im.Digest != digest {
		t.Fatalf("digest %s, the mirror has %s", im.Digest, digest)
	}
	if n := upstream.manifestGets.Load() + upstream.heads.Load() + upstream.blobGets.Load(); n != 0 {
		t.Errorf("the registry was asked %d times although the mirror had the image", n)
	}
	for _, bad := range []string{"ftp://h/x", "http:///x", "http://u:p@h/x", "http://h/x?y=1"} {
		if CheckMirrorURL(bad) == nil {
			t.Errorf("mirror %q accepted", bad)
		}
	}
	if err := CheckMirrorURL("http://10.200.0.1:5000/ghcr.io"); err != nil {
		t.Errorf("a prefixed mirror refused: %v", err)
	}
}
