package imagestore

import (
	"archive/tar"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1"

	"github.com/nixos-fireactions/nixos-fireactions/internal/hosttest"
)

// BenchmarkPullFormats pulls one image made of a real directory tree
// (FA_BENCH_TREE, default /usr/share: many small files, like a distro
// image) into an erofs and an ext4 store: time of the whole first pull
// (download, flatten, pack) and the size of the packed image. The layer is
// uncompressed so the figures compare the file systems, not gzip.
//
//	go test -run '^$' -bench BenchmarkPullFormats -benchtime 1x ./imagestore
func BenchmarkPullFormats(b *testing.B) {
	hosttest.RequireRoot(b, flattenNeedsRoot)
	tree := os.Getenv("FA_BENCH_TREE")
	if tree == "" {
		tree = "/usr/share"
	}
	dir := b.TempDir()
	tarPath := filepath.Join(dir, "layer.tar")
	content := tarTree(b, tree, tarPath)
	must(b, os.Mkdir(filepath.Join(dir, "registry"), 0o700))
	reg := startRegistryOn(b, registry.NewDiskBlobHandler(filepath.Join(dir, "registry")))
	hosttest.PushImage(b, reg.host, "bench/tree:v1", emptyConfig(), hosttest.FileLayer(b, tarPath))
	for _, fsType := range []string{FSErofs, FSExt4} {
		b.Run(fsType, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				s := openStore(b, filepath.Join(b.TempDir(), "store"), fsType)
				start := time.Now()
				im, err := s.Pull(b.Context(), reg.host+"/bench/tree:v1", PullIfNotPresent, nil)
				if err != nil {
					b.Fatal(err)
				}
				took := time.Since(start)
				b.ReportMetric(took.Seconds(), "s/pull")
				b.ReportMetric(float64(content)/1e6/took.Seconds(), "MB/s")
				b.ReportMetric(float64(im.Bytes)/1e6, "image-MB")
				b.ReportMetric(float64(im.Files), "files")
			}
		})
	}
}

// startRegistryOn is startRegistry keeping blobs in h.
func startRegistryOn(b *testing.B, h registry.BlobHandler) *testRegistry {
	return startRegistryWith(b, registry.WithBlobHandler(h))
}

// tarTree writes the tree at root as a tar file and returns its content
// bytes. Sockets and unreadable files are left out.
func tarTree(b *testing.B, root, dst string) int64 {
	f, err := os.Create(dst)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	var content int64
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		fi, err := d.Info()
		if err != nil || fi.Mode()&(fs.ModeSocket|fs.ModeNamedPipe|fs.ModeDevice) != 0 {
			return nil
		}
		link := ""
		if fi.Mode()&fs.ModeSymlink != 0 {
			link, _ = os.Readlink(p)
		}
		h, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			return nil
		}
		rel, _ := filepath.Rel(root, p)
		h.Name = filepath.ToSlash(rel)
		if fi.IsDir() {
			h.Name += "/"
		}
		var src *os.File
		if fi.Mode().IsRegular() {
			if src, err = os.Open(p); err != nil {
				return nil
			}
			defer src.Close()
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if src != nil {
			n, err := io.Copy(tw, src)
			content += n
			return err
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		b.Fatal(err)
	}
	return content
}

// BenchmarkPullOverASlowLink pulls a six-layer image from a registry that
// answers each blob after 100 ms and sends it at 8 MB/s per connection
// (a distant registry), with 1, 3 and 6 layer downloads at once. Compare
// the s/pull of the sub-benchmarks of one run.
func BenchmarkPullOverASlowLink(b *testing.B) {
	hosttest.RequireRoot(b, flattenNeedsRoot)
	g := &blobGate{delay: 100 * time.Millisecond, bytesPerSecond: 8 << 20}
	host := startGatedRegistry(b, g)
	var layers []v1.Layer
	for i := range 6 {
		// Random content: gzip cannot shrink it, so 2 MiB go on the wire.
		content := make([]byte, 2<<20)
		_, _ = rand.NewChaCha8([32]byte{byte(i)}).Read(content)
		layers = append(layers, hosttest.Layer(b, tarBytes(b, []entry{file(fmt.Sprintf("blob%d", i), 0o644, 0, 0, string(content))})))
	}
	hosttest.PushImage(b, host, "slow/img:v1", emptyConfig(), layers...)
	for _, n := range []int{1, 3, 6} {
		b.Run(fmt.Sprintf("downloads=%d", n), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				s, err := Open(Options{Dir: filepath.Join(b.TempDir(), "store"), FSType: FSErofs, Downloads: n})
				if err != nil {
					b.Fatal(err)
				}
				start := time.Now()
				if _, err := s.Pull(b.Context(), host+"/slow/img:v1", PullIfNotPresent, nil); err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(time.Since(start).Seconds(), "s/pull")
			}
		})
	}
}
