package imagestore

import (
	"context"
	"net/http/httptest"
	"testing"

	"github.com/distribution/distribution/v3/configuration"
	"github.com/distribution/distribution/v3/registry/handlers"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/inmemory"

	"github.com/nixos-fireactions/nixos-fireactions/internal/hosttest"
)

// startPullThroughCache starts distribution's registry in proxy mode in
// front of upstream and returns its URL.
func startPullThroughCache(t *testing.T, upstream string) string {
	t.Helper()
	cfg := &configuration.Configuration{}
	cfg.Storage = configuration.Storage{"inmemory": configuration.Parameters{}}
	cfg.Proxy.RemoteURL = "http://" + upstream
	cfg.Log.Level = "error"
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	srv := httptest.NewServer(handlers.NewApp(ctx, cfg))
	t.Cleanup(srv.Close)
	return srv.URL
}

// A second pull of an image through a pull-through cache, by a host with
// an empty store, takes no bytes from the upstream registry.
func TestMirroredPullsComeFromTheCache(t *testing.T) {
	hosttest.RequireRoot(t, flattenNeedsRoot)
	upstream := startRegistry(t)
	layers := testLayers(t)
	digest := hosttest.PushImage(t, upstream.host, "team/runner:v1", emptyConfig(), hosttest.Layer(t, layers[0]), hosttest.Layer(t, layers[1]))
	mirror := startPullThroughCache(t, upstream.host)
	ref := upstream.host + "/team/runner:v1"
	pull := func() *Image {
		t.Helper()
		s, err := Open(Options{Dir: tempStoreDir(t), Mirrors: map[string][]string{RegistryKey(upstream.host): {mirror}}})
		if err != nil {
			t.Fatal(err)
		}
		im, err := s.Pull(ctxBackground(), ref, PullAlways, nil)
		if err != nil {
			t.Fatal(err)
		}
		if im.Digest != digest {
			t.Fatalf("digest %s, pushed %s", im.Digest, digest)
		}
		return im
	}

	before := upstream.bodyBytes.Load()
	pull()
	first := upstream.bodyBytes.Load() - before
	if first == 0 || upstream.blobGets.Load() == 0 {
		t.Fatalf("the first pull took %d bytes and %d blobs from the upstream: the mirror was bypassed or not a cache", first, upstream.blobGets.Load())
	}
	blobs, manifests := upstream.blobGets.Load(), upstream.manifestGets.Load()
	before = upstream.bodyBytes.Load()
	im := pull()
	if n := upstream.bodyBytes.Load() - before; n != 0 {
		t.Errorf("the second pull took %d bytes from the upstream, want 0", n)
	}
	if upstream.blobGets.Load() != blobs || upstream.manifestGets.Load() != manifests {
		t.Errorf("the second pull made %d blob and %d manifest GETs upstream, want none",
			upstream.blobGets.Load()-blobs, upstream.manifestGets.Load()-manifests)
	}
	t.Logf("first pull: %d bytes from the upstream; second: 0 bytes, %d HEAD requests in all (the cache checks the tag)", first, upstream.heads.Load())
	if im.PulledBytes == 0 {
		t.Error("the second pull received nothing: it did not go through the mirror")
	}
}

// A mirror that is down is skipped for the registry itself.
func TestDeadMirrorFallsBackToTheRegistry(t *testing.T) {
	hosttest.RequireRoot(t, flattenNeedsRoot)
	upstream := startRegistry(t)
	digest := oneFileImage(t, upstream.host, "x/y:z", "content")
	s, err := Open(Options{Dir: tempStoreDir(t), Mirrors: map[string][]string{RegistryKey(upstream.host): {"http://127.0.0.1:1"}}})
	if err != nil {
		t.Fatal(err)
	}
	im, err := s.Pull(ctxBackground(), upstream.host+"/x/y:z", PullIfNotPresent, nil)
	if err != nil || im.Digest != digest {
		t.Fatalf("pull with a dead mirror: %v, %v", im, err)
	}
}
