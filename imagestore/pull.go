package imagestore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"golang.org/x/sys/unix"
)

// PullPolicy says when a pull asks the registry.
type PullPolicy string

const (
	// PullAlways resolves the reference at the registry every time and
	// fetches only when its digest is not in the store.
	PullAlways PullPolicy = "Always"
	// PullIfNotPresent uses what the reference last resolved to, and asks
	// the registry only when the store has nothing for it.
	PullIfNotPresent PullPolicy = "IfNotPresent"
	// PullNever uses the store only.
	PullNever PullPolicy = "Never"
)

// ParsePullPolicy accepts Always, IfNotPresent and Never.
func ParsePullPolicy(s string) (PullPolicy, error) {
	switch p := PullPolicy(s); p {
	case PullAlways, PullIfNotPresent, PullNever:
		return p, nil
	}
	return "", fmt.Errorf("pull policy %q: want Always, IfNotPresent or Never", s)
}

// Progress is where a pull is, for a progress line.
type Progress struct {
	Phase string // "resolving", "pulling", "packing"
	// Bytes is what the registry sent so far; Total what the image's
	// layers and config add up to (compressed).
	Bytes, Total int64
}

// Pull makes the image ref names present under policy and returns it.
// Concurrent pulls of one reference with one policy make one pull, and
// concurrent pulls that resolve to one digest build it once. progress,
// if not nil, is called as the pull goes (from the pulling goroutine and
// a ticker).
func (s *Store) Pull(ctx context.Context, ref string, policy PullPolicy, progress func(Progress)) (*Image, error) {
	r, err := parseRef(ref)
	if err != nil {
		return nil, err
	}
	if progress == nil {
		progress = func(Progress) {}
	}
	return s.pulls.do(ctx, string(policy)+" "+r.Name(), func() (*Image, error) {
		im, err := s.pull(ctx, r, policy, progress)
		if err != nil {
			return nil, fmt.Errorf("imagestore: pull %s: %w", r.Name(), err)
		}
		return im, nil
	})
}

func (s *Store) pull(ctx context.Context, r name.Reference, policy PullPolicy, progress func(Progress)) (*Image, error) {
	if d, ok := digestOf(r); ok {
		if im, err := s.Get(d); err == nil {
			return im, nil
		}
		if rec, ok := s.byResolved(d); ok {
			if im, err := s.Get(rec.Image); err == nil {
				return im, nil
			}
		}
		if policy == PullNever {
			return nil, fmt.Errorf("%w (pull policy Never)", ErrNotPresent)
		}
		return s.fetch(ctx, r, progress)
	}
	rec, known := s.readRef(r.Name())
	var have *Image
	if known {
		have, _ = s.Get(rec.Image)
	}
	switch policy {
	case PullNever:
		if have == nil {
			return nil, fmt.Errorf("%w (pull policy Never)", ErrNotPresent)
		}
		return have, nil
	case PullIfNotPresent:
		if have != nil {
			return have, nil
		}
		return s.fetch(ctx, r, progress)
	}
	progress(Progress{Phase: "resolving"})
	c := &counter{}
	desc, err := fromSources(ctx, s, r, func(ref name.Reference) (*v1.Descriptor, error) {
		return remote.Head(ref, s.remoteOptions(ctx, c)...)
	})
	if err != nil {
		return nil, fmt.Errorf("resolving: %w", err)
	}
	resolved := desc.Digest.String()
	if have != nil && rec.Resolved == resolved {
		s.log.Debug("image unchanged", "ref", r.Name(), "digest", have.Digest)
		return have, nil
	}
	if im, err := s.Get(resolved); err == nil {
		return im, s.writeRef(refRecord{Name: r.Name(), Resolved: resolved, Image: im.Digest, Updated: time.Now().UTC()})
	}
	// Fetch what was resolved, not the tag again: it may move meanwhile.
	return s.fetchAs(ctx, r.Context().Digest(resolved), r.Name(), progress)
}

// byResolved finds the record of a reference that resolved to d.
func (s *Store) byResolved(d string) (refRecord, bool) {
	refs, _ := s.readRefs()
	for _, r := range refs {
		if r.Resolved == d {
			return r, true
		}
	}
	return refRecord{}, false
}

func (s *Store) fetch(ctx context.Context, r name.Reference, progress func(Progress)) (*Image, error) {
	return s.fetchAs(ctx, r, r.Name(), progress)
}

// fetchAs fetches r and records it under the reference name refName.
func (s *Store) fetchAs(ctx context.Context, r name.Reference, refName string, progress func(Progress)) (*Image, error) {
	progress(Progress{Phase: "resolving"})
	c := &counter{}
	desc, err := fromSources(ctx, s, r, func(ref name.Reference) (*remote.Descriptor, error) {
		return remote.Get(ref, s.remoteOptions(ctx, c)...)
	})
	if err != nil {
		return nil, err
	}
	img, err := imageOf(desc)
	if err != nil {
		return nil, err
	}
	dg, err := img.Digest()
	if err != nil {
		return nil, err
	}
	im, err := s.Get(dg.String())
	if err != nil {
		im, err = s.builds.do(ctx, dg.String(), func() (*Image, error) {
			return s.build(ctx, refName, img, dg.String(), c, progress)
		})
		if err != nil {
			return nil, err
		}
	}
	if err := s.writeRef(refRecord{Name: refName, Resolved: desc.Digest.String(), Image: im.Digest, Updated: time.Now().UTC()}); err != nil {
		return nil, fmt.Errorf("recording %s: %w", refName, err)
	}
	s.enforceCap(im.Digest)
	return im, nil
}

// tempDir is a pull's private directory, locked for as long as the pull
// (or a packer it started) lives.
type tempDir struct {
	path string
	lock *os.File
}

// newTemp makes a temporary directory and locks it. The store's tmp
// directory is held shared meanwhile, so that Open's cleanup, which holds
// it exclusively, never sees the new directory before it is locked.
func (s *Store) newTemp() (*tempDir, error) {
	tmp := filepath.Join(s.opt.Dir, "tmp")
	parent, err := os.Open(tmp)
	if err != nil {
		return nil, err
	}
	defer parent.Close()
	if err := unix.Flock(int(parent.Fd()), unix.LOCK_SH); err != nil {
		return nil, err
	}
	p, err := os.MkdirTemp(tmp, "pull-")
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if err == nil {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
	}
	if err != nil {
		if f != nil {
			f.Close()
		}
		os.RemoveAll(p)
		return nil, err
	}
	return &tempDir{path: p, lock: f}, nil
}

// build flattens img into a new image directory and renames it into place.
func (s *Store) build(ctx context.Context, ref string, img v1.Image, digest string, c *counter, progress func(Progress)) (im *Image, err error) {
	start := time.Now()
	m, err := img.Manifest()
	if err != nil {
		return nil, err
	}
	total := m.Config.Size
	for _, l := range m.Layers {
		total += l.Size
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	layers, err := img.Layers()
	if err != nil {
		return nil, err
	}
	tmp, err := s.newTemp()
	if err != nil {
		return nil, err
	}
	committed := false
	defer func() {
		if !committed {
			os.RemoveAll(tmp.path)
		}
		tmp.lock.Close()
	}()

	stop := tick(func() { progress(Progress{Phase: "pulling", Bytes: c.n.Load(), Total: total}) })
	rootfs := filepath.Join(tmp.path, "rootfs")
	st, err := s.flatten(ctx, layers, rootfs, filepath.Join(tmp.path, indexFile))
	stop()
	if err != nil {
		return nil, err
	}
	progress(Progress{Phase: "packing", Bytes: c.n.Load(), Total: total})
	pulled := c.n.Load()
	flattened := time.Now()
	if err := buildFS(ctx, s.opt.FSType, rootfs, filepath.Join(tmp.path, rootFile), st, tmp.lock); err != nil {
		return nil, fmt.Errorf("packing: %w", err)
	}
	im = &Image{
		Digest: digest, Ref: ref, FSType: s.opt.FSType,
		ContentBytes: st.contentBytes, Files: st.entries, Layers: len(layers),
		PulledBytes: pulled, Created: time.Now().UTC(),
		Config: RunConfig{
			User: cfg.Config.User, Env: cfg.Config.Env, WorkingDir: cfg.Config.WorkingDir,
			Entrypoint: cfg.Config.Entrypoint, Cmd: cfg.Config.Cmd,
		},
		Passwd: readInRoot(rootfs, "etc/passwd"),
		Group:  readInRoot(rootfs, "etc/group"),
	}
	if err := os.RemoveAll(rootfs); err != nil {
		return nil, err
	}
	if err := s.commit(tmp, im); err != nil {
		return nil, err
	}
	committed = true
	s.log.Info("image pulled", "ref", ref, "digest", digest, "fs", s.opt.FSType, "layers", len(layers),
		"pulled_bytes", pulled, "content_bytes", st.contentBytes, "image_bytes", im.Bytes,
		"pull_and_flatten", flattened.Sub(start).Round(time.Millisecond), "pack", time.Since(flattened).Round(time.Millisecond))
	return s.Get(digest)
}

// flatten applies the layers into a new tree at rootfs and indexes it.
// The layers download in parallel (see prefetcher) into a directory
// beside rootfs, gone when flatten returns.
func (s *Store) flatten(ctx context.Context, layers []v1.Layer, rootfs, index string) (treeStats, error) {
	if err := os.Mkdir(rootfs, 0o755); err != nil {
		return treeStats{}, err
	}
	ap, err := newApplier(rootfs)
	if err != nil {
		return treeStats{}, err
	}
	defer ap.close()
	downloads := filepath.Join(filepath.Dir(rootfs), "layers")
	if err := os.Mkdir(downloads, 0o700); err != nil {
		return treeStats{}, err
	}
	defer os.RemoveAll(downloads)
	pf := startPrefetch(ctx, layers, downloads, s.downloads())
	defer pf.stop()
	for i := range layers {
		path, err := pf.next(i)
		if err != nil {
			return treeStats{}, fmt.Errorf("layer %d: download: %w", i+1, err)
		}
		err = applyFile(ctx, ap, path)
		os.Remove(path)
		if err != nil {
			return treeStats{}, fmt.Errorf("layer %d: %w", i+1, err)
		}
		if s.afterLayer != nil {
			s.afterLayer(i)
		}
	}
	if err := ap.finish(); err != nil {
		return treeStats{}, err
	}
	f, err := os.Create(index)
	if err != nil {
		return treeStats{}, err
	}
	defer f.Close()
	st, err := walkTree(rootfs, f)
	if err != nil {
		return st, fmt.Errorf("indexing: %w", err)
	}
	return st, f.Close()
}

// applyFile applies one downloaded layer to the tree. Reading it to its
// end makes the decompressor check its trailer.
func applyFile(ctx context.Context, ap *applier, path string) error {
	rc, err := uncompressed(path)
	if err != nil {
		return err
	}
	defer rc.Close()
	if err := ap.applyLayer(ctx, rc); err != nil {
		return err
	}
	if _, err := io.Copy(io.Discard, rc); err != nil {
		return err
	}
	return rc.Close()
}

// commit records the image and renames its directory into place; if
// another process put the same digest there first, its copy wins.
func (s *Store) commit(tmp *tempDir, im *Image) error {
	root, err := os.Open(filepath.Join(tmp.path, rootFile))
	if err != nil {
		return err
	}
	err = root.Sync()
	root.Close()
	if err != nil {
		return err
	}
	im.Bytes = allocated(tmp.path) + 4096 // and the meta file
	b, err := json.MarshalIndent(im, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFileAtomic(filepath.Join(tmp.path, metaFile), b); err != nil {
		return err
	}
	touch(filepath.Join(tmp.path, usedFile))
	dst := s.imageDir(im.Digest)
	if err := os.Rename(tmp.path, dst); err != nil {
		if _, statErr := os.Stat(filepath.Join(dst, metaFile)); statErr == nil {
			os.RemoveAll(tmp.path)
			return nil
		}
		return err
	}
	if d, err := os.Open(filepath.Dir(dst)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// tick calls f every half second until the returned stop is called.
func tick(f func()) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				f()
			}
		}
	}()
	return func() { close(done); <-finished }
}

// IsNotPresent says whether err means the image is not in the store.
func IsNotPresent(err error) bool { return errors.Is(err, ErrNotPresent) }
