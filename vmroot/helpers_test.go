package vmroot

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/config"
	"github.com/nixos-fireactions/nixos-fireactions/imagestore"
)

// loadPools sets up the pools' roots and loads their images, as serve
// does once it has adopted what a previous run left.
func loadPools(ctx context.Context, store *imagestore.Store, disks *Disks, pools []config.Pool) (*Pools, error) {
	ps, err := New(store, disks, pools, slog.New(slog.DiscardHandler))
	if err != nil {
		return nil, err
	}
	if err := ps.Load(ctx); err != nil {
		ps.Close()
		return nil, err
	}
	return ps, nil
}

// tarFile is a regular file of a test layer.
type tarFile struct {
	name    string
	mode    int64
	content string
}

func tarOf(t testing.TB, files ...tarFile) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		h := &tar.Header{Name: f.name, Typeflag: tar.TypeReg, Mode: f.mode, Size: int64(len(f.content)), ModTime: time.Unix(1700000000, 0)}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		io.WriteString(tw, f.content)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// flattenNeedsRoot is why the tests that pull an image need root.
const flattenNeedsRoot = "flattening an image sets owners"
