package imagestore

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/compression"
	"github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/nixos-fireactions/nixos-fireactions/internal/hosttest"
)

// blobGate sits in front of a registry: it holds every blob GET for
// delay, counting how many are in flight at once, and can break the
// blob with a given digest.
type blobGate struct {
	delay  time.Duration
	broken string // digest whose body is sent corrupted
	// bytesPerSecond throttles each blob's body (0: no throttle), as one
	// connection of a distant registry would be.
	bytesPerSecond int

	mu               sync.Mutex
	inFlight, most   int
	brokenDeliveries int
}

func (g *blobGate) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || !strings.Contains(r.URL.Path, "/blobs/") {
			h.ServeHTTP(w, r)
			return
		}
		g.mu.Lock()
		g.inFlight++
		g.most = max(g.most, g.inFlight)
		g.mu.Unlock()
		defer func() {
			g.mu.Lock()
			g.inFlight--
			g.mu.Unlock()
		}()
		time.Sleep(g.delay)
		if g.broken != "" && strings.HasSuffix(r.URL.Path, g.broken) {
			g.mu.Lock()
			g.brokenDeliveries++
			g.mu.Unlock()
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, r)
			body := rec.Body.Bytes()
			if len(body) > 0 {
				body[len(body)/2] ^= 0xff
			}
			for k, v := range rec.Header() {
				w.Header()[k] = v
			}
			w.WriteHeader(rec.Code)
			_, _ = w.Write(body)
			return
		}
		if g.bytesPerSecond > 0 {
			w = &throttledWriter{ResponseWriter: w, perSecond: g.bytesPerSecond}
		}
		h.ServeHTTP(w, r)
	})
}

// throttledWriter sends at most perSecond bytes a second.
type throttledWriter struct {
	http.ResponseWriter
	perSecond int
}

func (w *throttledWriter) Write(b []byte) (int, error) {
	n := 0
	for len(b) > 0 {
		chunk := min(len(b), w.perSecond/50)
		m, err := w.ResponseWriter.Write(b[:chunk])
		n += m
		if err != nil {
			return n, err
		}
		b = b[chunk:]
		time.Sleep(20 * time.Millisecond)
	}
	return n, nil
}

func startGatedRegistry(t testing.TB, g *blobGate) string {
	t.Helper()
	srv := httptest.NewServer(g.wrap(hosttest.Registry()))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// fileLayers are n gzip layers, layer i holding the file "f<i>".
func fileLayers(t testing.TB, n int) []v1.Layer {
	var ls []v1.Layer
	for i := range n {
		ls = append(ls, hosttest.Layer(t, tarBytes(t, []entry{file(fmt.Sprintf("f%d", i), 0o644, 0, 0, fmt.Sprint(i))})))
	}
	return ls
}

// TestLayersDownloadInParallel: with a registry that takes a while per
// blob, an image's layers are fetched up to Downloads at once, and the
// tree is still every layer applied in order.
func TestLayersDownloadInParallel(t *testing.T) {
	hosttest.RequireRoot(t, flattenNeedsRoot)
	for _, tc := range []struct {
		downloads, layers, wantMost int
	}{
		{downloads: 1, layers: 5, wantMost: 1},
		{downloads: 3, layers: 5, wantMost: 3},
		{downloads: 0, layers: 5, wantMost: DefaultDownloads},
		{downloads: 8, layers: 4, wantMost: 5}, // 4 + the overwriting layer
	} {
		t.Run(fmt.Sprintf("downloads %d of %d layers", tc.downloads, tc.layers), func(t *testing.T) {
			g := &blobGate{delay: 150 * time.Millisecond}
			host := startGatedRegistry(t, g)
			layers := fileLayers(t, tc.layers)
			// The last layer overwrites the first one's file: order matters.
			layers = append(layers, hosttest.Layer(t, tarBytes(t, []entry{file("f0", 0o644, 0, 0, "last")})))
			hosttest.PushImage(t, host, "par/img:v1", emptyConfig(), layers...)
			g.mu.Lock()
			g.most = 0
			g.mu.Unlock()

			s, err := Open(Options{Dir: tempStoreDir(t), FSType: FSErofs, Downloads: tc.downloads})
			if err != nil {
				t.Fatal(err)
			}
			im, err := s.Pull(ctxBackground(), host+"/par/img:v1", PullIfNotPresent, nil)
			if err != nil {
				t.Fatal(err)
			}
			if g.most != tc.wantMost {
				t.Errorf("at most %d blob downloads at once, want %d", g.most, tc.wantMost)
			}
			mnt := mountImage(t, im.Path(), FSErofs)
			for i := 1; i < tc.layers; i++ {
				assertFile(t, filepath.Join(mnt, fmt.Sprintf("f%d", i)), fmt.Sprint(i))
			}
			assertFile(t, filepath.Join(mnt, "f0"), "last")
			assertNoDownloadsLeft(t, s)
		})
	}
}

// TestLayerCompressions: gzip, zstd and uncompressed layers, told apart
// by their first bytes, all flatten.
func TestLayerCompressions(t *testing.T) {
	hosttest.RequireRoot(t, flattenNeedsRoot)
	host := startRegistry(t).host
	gz := hosttest.Layer(t, tarBytes(t, []entry{file("gz", 0o644, 0, 0, "gzip")}))
	zb := tarBytes(t, []entry{file("zst", 0o644, 0, 0, "zstd")})
	zst, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(zb)), nil
	}, tarball.WithCompression(compression.ZStd))
	if err != nil {
		t.Fatal(err)
	}
	raw := static.NewLayer(tarBytes(t, []entry{file("raw", 0o644, 0, 0, "none")}), types.OCIUncompressedLayer)
	hosttest.PushImage(t, host, "comp/img:v1", emptyConfig(), gz, zst, raw)

	s := openStore(t, tempStoreDir(t), FSErofs)
	im, err := s.Pull(ctxBackground(), host+"/comp/img:v1", PullIfNotPresent, nil)
	if err != nil {
		t.Fatal(err)
	}
	mnt := mountImage(t, im.Path(), FSErofs)
	assertFile(t, filepath.Join(mnt, "gz"), "gzip")
	assertFile(t, filepath.Join(mnt, "zst"), "zstd")
	assertFile(t, filepath.Join(mnt, "raw"), "none")
}

// TestACorruptLayerFailsThePullAndLeavesNothing: a blob that does not
// match its digest fails the pull, naming the layer; the other
// downloads stop, and no file of the attempt stays in the store.
func TestACorruptLayerFailsThePullAndLeavesNothing(t *testing.T) {
	hosttest.RequireRoot(t, flattenNeedsRoot)
	layers := fileLayers(t, 4)
	d, err := layers[1].Digest()
	if err != nil {
		t.Fatal(err)
	}
	g := &blobGate{delay: 50 * time.Millisecond, broken: d.String()}
	host := startGatedRegistry(t, g)
	hosttest.PushImage(t, host, "bad/img:v1", emptyConfig(), layers...)

	s := openStore(t, tempStoreDir(t), FSErofs)
	_, err = s.Pull(ctxBackground(), host+"/bad/img:v1", PullIfNotPresent, nil)
	if err == nil {
		t.Fatal("a pull with a corrupt layer succeeded")
	}
	if !strings.Contains(err.Error(), "layer 2") {
		t.Errorf("error %q does not name layer 2", err)
	}
	if g.brokenDeliveries == 0 {
		t.Error("the corrupt blob was never served: the test proves nothing")
	}
	assertNoDownloadsLeft(t, s)
	if ims, err := s.List(); err != nil || len(ims) != 0 {
		t.Errorf("store lists %d images (%v) after a failed pull", len(ims), err)
	}
}

func assertFile(t *testing.T, path, want string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Error(err)
		return
	}
	if string(b) != want {
		t.Errorf("%s holds %q, want %q", path, b, want)
	}
}

// assertNoDownloadsLeft: no layer file of a pull stays anywhere in the
// store once the pull is over.
func assertNoDownloadsLeft(t *testing.T, s *Store) {
	t.Helper()
	_ = filepath.WalkDir(s.opt.Dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(d.Name(), "layer-") {
			t.Errorf("download left in the store: %s", p)
		}
		return nil
	})
}
