package imagestore

import (
	"bufio"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// IndexEntry is one file of a flattened image, as recorded when it was
// flattened.
type IndexEntry struct {
	Path string `json:"p"`
	Mode uint32 `json:"m"` // st_mode: type and permission bits
	UID  uint32 `json:"u"`
	GID  uint32 `json:"g"`
	Size int64  `json:"s,omitempty"`
	Link string `json:"l,omitempty"` // a symlink's target
}

// IsDir, IsRegular and IsSymlink classify the entry.
func (e IndexEntry) IsDir() bool     { return e.Mode&unix.S_IFMT == unix.S_IFDIR }
func (e IndexEntry) IsRegular() bool { return e.Mode&unix.S_IFMT == unix.S_IFREG }
func (e IndexEntry) IsSymlink() bool { return e.Mode&unix.S_IFMT == unix.S_IFLNK }

type indexWriter struct {
	zw  *gzip.Writer
	bw  *bufio.Writer
	enc *json.Encoder
}

func newIndexWriter(w io.Writer) *indexWriter {
	zw, _ := gzip.NewWriterLevel(w, gzip.BestSpeed)
	bw := bufio.NewWriterSize(zw, 64<<10)
	return &indexWriter{zw: zw, bw: bw, enc: json.NewEncoder(bw)}
}

func (w *indexWriter) add(e IndexEntry) error { return w.enc.Encode(e) }

func (w *indexWriter) close() error {
	if err := w.bw.Flush(); err != nil {
		return err
	}
	return w.zw.Close()
}

// Index is an image's files by path.
type Index map[string]IndexEntry

// ReadIndex reads the index recorded when the image was flattened.
func (im *Image) ReadIndex() (Index, error) {
	f, err := os.Open(filepath.Join(im.dir, indexFile))
	if err != nil {
		return nil, fmt.Errorf("imagestore: index of %s: %w", im.Digest, err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return nil, fmt.Errorf("imagestore: index of %s: %w", im.Digest, err)
	}
	ix := Index{}
	dec := json.NewDecoder(bufio.NewReaderSize(zr, 64<<10))
	for {
		var e IndexEntry
		err := dec.Decode(&e)
		if errors.Is(err, io.EOF) {
			return ix, nil
		}
		if err != nil {
			return nil, fmt.Errorf("imagestore: index of %s: %w", im.Digest, err)
		}
		ix[e.Path] = e
	}
}

// Resolve follows p through the image's symlinks, as the guest kernel
// would, and returns the entry it ends at.
func (ix Index) Resolve(p string) (IndexEntry, error) {
	cur := "/"
	rest := strings.Split(strings.Trim(path.Clean("/"+p), "/"), "/")
	for hops := 0; len(rest) > 0; {
		c := rest[0]
		rest = rest[1:]
		if c == "" || c == "." {
			continue
		}
		next := path.Join(cur, c)
		e, ok := ix[next]
		if !ok {
			return IndexEntry{}, fmt.Errorf("%s: no %s in the image", p, next)
		}
		if !e.IsSymlink() {
			if len(rest) > 0 && !e.IsDir() {
				return IndexEntry{}, fmt.Errorf("%s: %s is not a directory", p, next)
			}
			cur = next
			continue
		}
		if hops++; hops > 40 {
			return IndexEntry{}, fmt.Errorf("%s: too many levels of symbolic links", p)
		}
		target := e.Link
		if !path.IsAbs(target) {
			target = path.Join(cur, target)
		}
		rest = append(strings.Split(strings.Trim(path.Clean(target), "/"), "/"), rest...)
		cur = "/"
	}
	e, ok := ix[cur]
	if !ok {
		return IndexEntry{}, fmt.Errorf("%s: no %s in the image", p, cur)
	}
	return e, nil
}

// Executable checks that p is, in the image, a regular file someone may
// execute: what the guest needs to start the runner agent.
func (ix Index) Executable(p string) error {
	e, err := ix.Resolve(p)
	if err != nil {
		return err
	}
	if !e.IsRegular() {
		return fmt.Errorf("%s is not a regular file (mode %o)", p, e.Mode)
	}
	if e.Mode&0o111 == 0 {
		return fmt.Errorf("%s is not executable (mode %o)", p, e.Mode&0o7777)
	}
	return nil
}
