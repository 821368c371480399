package imagestore

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1"

	"github.com/nixos-fireactions/nixos-fireactions/internal/hosttest"
)

// testRegistry is go-containerregistry's registry on loopback, counting
// what it serves.
type testRegistry struct {
	host string
	// blobGets counts GET requests for blobs; bodyBytes the bytes of all
	// response bodies.
	blobGets, manifestGets, heads, bodyBytes atomic.Int64
}

func startRegistry(t testing.TB) *testRegistry { return startRegistryWith(t) }

func startRegistryWith(t testing.TB, opts ...registry.Option) *testRegistry {
	t.Helper()
	tr := &testRegistry{}
	h := hosttest.Registry(opts...)
	srv := httptest.NewServer(tr.count(h))
	t.Cleanup(srv.Close)
	tr.host = strings.TrimPrefix(srv.URL, "http://")
	return tr
}

// count wraps h, counting requests and response body bytes.
func (tr *testRegistry) count(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == http.MethodHead:
			tr.heads.Add(1)
		case r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/"):
			tr.blobGets.Add(1)
		case r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/manifests/"):
			tr.manifestGets.Add(1)
		}
		h.ServeHTTP(&countingWriter{ResponseWriter: w, n: &tr.bodyBytes}, r)
	})
}

type countingWriter struct {
	http.ResponseWriter
	n *atomic.Int64
}

func (w *countingWriter) Write(b []byte) (int, error) {
	n, err := w.ResponseWriter.Write(b)
	w.n.Add(int64(n))
	return n, err
}

// entry is one tar entry of a test layer.
type entry struct {
	name    string
	typ     byte
	mode    int64
	uid     int
	gid     int
	content string
	link    string
	xattrs  map[string]string
	major   int64
	minor   int64
}

func dir(name string, mode int64, uid, gid int) entry {
	return entry{name: name, typ: tar.TypeDir, mode: mode, uid: uid, gid: gid}
}

func file(name string, mode int64, uid, gid int, content string) entry {
	return entry{name: name, typ: tar.TypeReg, mode: mode, uid: uid, gid: gid, content: content}
}

func symlink(name, target string) entry {
	return entry{name: name, typ: tar.TypeSymlink, mode: 0o777, link: target}
}

func hardlink(name, target string) entry {
	return entry{name: name, typ: tar.TypeLink, link: target}
}

// tarBytes writes the entries as a tar stream.
func tarBytes(t testing.TB, entries []entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mtime := time.Unix(1700000000, 0)
	for _, e := range entries {
		h := &tar.Header{
			Name: e.name, Typeflag: e.typ, Mode: e.mode, Uid: e.uid, Gid: e.gid,
			Linkname: e.link, ModTime: mtime, Size: int64(len(e.content)),
			Devmajor: e.major, Devminor: e.minor, Format: tar.FormatPAX,
		}
		if e.typ != tar.TypeReg {
			h.Size = 0
		}
		if len(e.xattrs) > 0 {
			h.PAXRecords = map[string]string{}
			for k, v := range e.xattrs {
				h.PAXRecords["SCHILY.xattr."+k] = v
			}
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if e.typ == tar.TypeReg {
			if _, err := io.WriteString(tw, e.content); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func openStore(t testing.TB, dir, fsType string) *Store {
	t.Helper()
	s, err := Open(Options{Dir: dir, FSType: fsType})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// mountImage mounts a file system image read-only on a loop device and
// returns where.
func mountImage(t testing.TB, img, fsType string) string {
	t.Helper()
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", fsType, "-o", "loop,ro", img, mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount %s: %v: %s", img, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", mnt, err, out)
		}
	})
	return mnt
}

var ctxBackground = context.Background

func emptyConfig() v1.Config { return v1.Config{} }

// serialCounter collects concurrent results in tests.
type serialCounter struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *serialCounter) add(k string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[string]int{}
	}
	c.n[k]++
}

func tempStoreDir(t testing.TB) string {
	return filepath.Join(t.TempDir(), "store")
}

// flattenNeedsRoot is why most of the store's tests need root.
const flattenNeedsRoot = "flattening sets owners and device nodes, and the check mounts the image"
