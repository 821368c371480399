package imagestore

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// DefaultDownloads is how many layers of one image download at once
// unless Options.Downloads says otherwise (containerd's default too).
const DefaultDownloads = 3

// prefetcher downloads an image's layers, up to n at once, into files in
// dir, while the applier takes them in order: a pull costs about the
// time of its slowest downloads plus the applying, not the sum of every
// layer's round trips and transfer. A layer's file goes once applied;
// compressed layers on disk are at most the image's compressed size.
type prefetcher struct {
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	ready  []chan fetched // one per layer, in order
}

// fetched is one downloaded layer: its file, or why there is none.
type fetched struct {
	path string
	err  error
}

// downloads is how many layers download at once.
func (s *Store) downloads() int {
	if s.opt.Downloads < 1 {
		return DefaultDownloads
	}
	return s.opt.Downloads
}

func startPrefetch(ctx context.Context, layers []v1.Layer, dir string, n int) *prefetcher {
	ctx, cancel := context.WithCancel(ctx)
	p := &prefetcher{ctx: ctx, cancel: cancel, ready: make([]chan fetched, len(layers))}
	for i := range p.ready {
		p.ready[i] = make(chan fetched, 1)
	}
	slots := make(chan struct{}, n)
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for i, l := range layers {
			// In order: layer i starts no later than any layer after it,
			// so the one the applier waits for is never queued behind.
			select {
			case slots <- struct{}{}:
			case <-ctx.Done():
				for _, c := range p.ready[i:] {
					c <- fetched{err: ctx.Err()}
				}
				return
			}
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				path := filepath.Join(dir, fmt.Sprintf("layer-%d", i))
				err := download(ctx, l, path)
				<-slots
				p.ready[i] <- fetched{path: path, err: err}
			}()
		}
	}()
	return p
}

// next waits for layer i's file.
func (p *prefetcher) next(i int) (string, error) {
	select {
	case f := <-p.ready[i]:
		return f.path, f.err
	case <-p.ctx.Done():
		return "", p.ctx.Err()
	}
}

// stop cancels the downloads still running and waits for them, so no
// file is written after the caller removes dir.
func (p *prefetcher) stop() {
	p.cancel()
	p.wg.Wait()
}

// download writes l's blob, as the registry sends it, to path. Reading
// it to its end makes the registry client check the blob's digest.
func download(ctx context.Context, l v1.Layer, path string) error {
	rc, err := l.Compressed()
	if err != nil {
		return err
	}
	defer rc.Close()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, ctxReader{ctx, rc}); err != nil {
		f.Close()
		return err
	}
	if err := rc.Close(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// ctxReader stops a copy once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(b []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(b)
}

// Magic numbers of the layer compressions the OCI image spec allows.
var (
	gzipMagic = []byte{0x1f, 0x8b}
	zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}
)

// uncompressed opens a downloaded layer as a tar stream, whatever its
// compression: gzip, zstd or none, told by its first bytes.
func uncompressed(path string) (io.ReadCloser, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	br := bufio.NewReaderSize(f, 256<<10)
	head, _ := br.Peek(len(zstdMagic))
	switch {
	case bytes.HasPrefix(head, gzipMagic):
		zr, err := gzip.NewReader(br)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("gzip: %w", err)
		}
		return readCloser{zr, func() error { return errors.Join(zr.Close(), f.Close()) }}, nil
	case bytes.HasPrefix(head, zstdMagic):
		zr, err := zstd.NewReader(br)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("zstd: %w", err)
		}
		return readCloser{zr, func() error { zr.Close(); return f.Close() }}, nil
	default:
		return readCloser{br, f.Close}, nil
	}
}

type readCloser struct {
	io.Reader
	close func() error
}

func (r readCloser) Close() error { return r.close() }
