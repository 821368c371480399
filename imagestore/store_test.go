package imagestore

import (
	"crypto/rand"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1"

	"github.com/nixos-fireactions/nixos-fireactions/internal/hosttest"
)

// oneFileImage pushes an image of one file and returns its digest.
func oneFileImage(t testing.TB, host, repoTag, content string) string {
	t.Helper()
	return hosttest.PushImage(t, host, repoTag, v1.Config{}, hosttest.Layer(t, tarBytes(t, []entry{file("f", 0o644, 0, 0, content)})))
}

func TestPullPolicies(t *testing.T) {
	hosttest.RequireRoot(t, flattenNeedsRoot)
	reg := startRegistry(t)
	s := openStore(t, tempStoreDir(t), "")
	ref := reg.host + "/p/img:latest"
	ctx := ctxBackground()

	if _, err := s.Pull(ctx, ref, PullNever, nil); !IsNotPresent(err) {
		t.Fatalf("Never on an empty store: %v, want not present", err)
	}
	d1 := oneFileImage(t, reg.host, "p/img:latest", "one")
	im, err := s.Pull(ctx, ref, PullIfNotPresent, nil)
	if err != nil || im.Digest != d1 {
		t.Fatalf("IfNotPresent: %v, %v; want %s", im, err, d1)
	}

	d2 := oneFileImage(t, reg.host, "p/img:latest", "two")
	served := reg.heads.Load() + reg.manifestGets.Load() + reg.blobGets.Load()
	for _, p := range []PullPolicy{PullIfNotPresent, PullNever} {
		im, err := s.Pull(ctx, ref, p, nil)
		if err != nil || im.Digest != d1 {
			t.Fatalf("%s after the tag moved: %v, %v; want the cached %s", p, im, err, d1)
		}
	}
	if n := reg.heads.Load() + reg.manifestGets.Load() + reg.blobGets.Load(); n != served {
		t.Fatalf("IfNotPresent and Never asked the registry %d times", n-served)
	}

	im, err = s.Pull(ctx, ref, PullAlways, nil)
	if err != nil || im.Digest != d2 {
		t.Fatalf("Always after the tag moved: %v, %v; want %s", im, err, d2)
	}
	blobs, manifests, heads := reg.blobGets.Load(), reg.manifestGets.Load(), reg.heads.Load()
	im, err = s.Pull(ctx, ref, PullAlways, nil)
	if err != nil || im.Digest != d2 {
		t.Fatalf("Always again: %v, %v; want %s", im, err, d2)
	}
	if reg.blobGets.Load() != blobs || reg.manifestGets.Load() != manifests || reg.heads.Load() != heads+1 {
		t.Fatalf("Always with an unchanged digest: %d blob GETs, %d manifest GETs, %d HEADs; want 0, 0, 1",
			reg.blobGets.Load()-blobs, reg.manifestGets.Load()-manifests, reg.heads.Load()-heads)
	}
	// A digest reference is served from the store under any policy.
	if im, err := s.Pull(ctx, reg.host+"/p/img@"+d1, PullNever, nil); err != nil || im.Digest != d1 {
		t.Fatalf("by digest with Never: %v, %v", im, err)
	}
	list, err := s.List()
	if err != nil || len(list) != 2 {
		t.Fatalf("list: %v, %v; want 2 images", list, err)
	}
}

func TestConcurrentPullsOfOneImagePullOnce(t *testing.T) {
	hosttest.RequireRoot(t, flattenNeedsRoot)
	reg := startRegistry(t)
	d := oneFileImage(t, reg.host, "c/img:v1", strings.Repeat("x", 1<<20))
	s := openStore(t, tempStoreDir(t), "")
	before := reg.blobGets.Load()
	var wg sync.WaitGroup
	var got serialCounter
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			im, err := s.Pull(ctxBackground(), reg.host+"/c/img:v1", PullIfNotPresent, nil)
			if err != nil {
				got.add("error: " + err.Error())
				return
			}
			got.add(im.Digest)
		}()
	}
	wg.Wait()
	if got.n[d] != 8 {
		t.Fatalf("results %v, want 8 × %s", got.n, d)
	}
	// One pull: the config blob and the one layer.
	if n := reg.blobGets.Load() - before; n != 2 {
		t.Fatalf("the registry served %d blobs for 8 concurrent pulls, want 2 (one pull)", n)
	}
}

func TestSizeCapEvictsLeastRecentlyUsedUnleasedImages(t *testing.T) {
	hosttest.RequireRoot(t, flattenNeedsRoot)
	reg := startRegistry(t)
	ctx := ctxBackground()
	random := func() string {
		b := make([]byte, 1<<20)
		rand.Read(b)
		return string(b)
	}
	a := oneFileImage(t, reg.host, "lru/a:1", random())
	b := oneFileImage(t, reg.host, "lru/b:1", random())
	c := oneFileImage(t, reg.host, "lru/c:1", random())
	dir := tempStoreDir(t)
	probe := openStore(t, dir, "")
	imA, err := probe.Pull(ctx, reg.host+"/lru/a:1", PullIfNotPresent, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Room for two images of this size, not three.
	s, err := Open(Options{Dir: dir, MaxBytes: imA.Bytes*2 + imA.Bytes/2})
	if err != nil {
		t.Fatal(err)
	}
	lease, err := s.Acquire(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Pull(ctx, reg.host+"/lru/b:1", PullIfNotPresent, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Pull(ctx, reg.host+"/lru/c:1", PullIfNotPresent, nil); err != nil {
		t.Fatal(err)
	}
	// a is the least recently used but leased: b goes.
	present := func() map[string]bool {
		m := map[string]bool{}
		list, err := s.List()
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range list {
			m[e.Digest] = true
		}
		return m
	}
	if p := present(); !p[a] || p[b] || !p[c] {
		t.Fatalf("after the cap: a %v b %v c %v; want a (leased) and c (new) kept, b evicted", p[a], p[b], p[c])
	}
	if _, err := s.Remove(a); !errors.Is(err, ErrInUse) {
		t.Fatalf("removing a leased image: %v, want ErrInUse", err)
	}
	if _, err := s.Acquire(ctx, b); !IsNotPresent(err) {
		t.Fatalf("leasing the evicted image: %v", err)
	}
	lease.Release()
	evicted, err := s.Prune(0, "")
	if err != nil || len(evicted) != 2 || len(present()) != 0 {
		t.Fatalf("prune all: evicted %d, err %v, left %v", len(evicted), err, present())
	}
	// The reference to an evicted image is gone with it.
	if _, err := s.Pull(ctx, reg.host+"/lru/a:1", PullNever, nil); !IsNotPresent(err) {
		t.Fatalf("Never after prune: %v", err)
	}
}
