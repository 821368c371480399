package imagestore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nixos-fireactions/nixos-fireactions/sleep"
)

// Lease keeps an image in the store while a VM (or a pool) uses it. It is
// a shared flock on the image's directory: eviction and removal take the
// lock exclusively and skip an image anyone holds, in this process or
// another, and the lock goes with the process if it dies.
type Lease struct {
	*Image
	f *os.File
}

// Release gives the image back. It is safe to call more than once.
func (l *Lease) Release() {
	if l != nil && l.f != nil {
		l.f.Close()
		l.f = nil
	}
}

// Acquire leases the image with the manifest digest, marking it used now.
func (s *Store) Acquire(ctx context.Context, digest string) (*Lease, error) {
	im, err := s.Get(digest)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(im.dir)
	if err != nil {
		return nil, ErrNotPresent
	}
	// An eviction holds the lock exclusively only while it renames the
	// directory away: wait it out.
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB)
		if !errors.Is(err, unix.EWOULDBLOCK) {
			break
		}
		if err = sleep.For(ctx, 5*time.Millisecond); err != nil {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("imagestore: lease %s: %w", digest, err)
	}
	// The directory may have been evicted while we waited: the lock must be
	// on the directory that is still in place.
	if !sameFile(f, im.dir) {
		f.Close()
		return nil, ErrNotPresent
	}
	touch(filepath.Join(im.dir, usedFile))
	return &Lease{Image: im, f: f}, nil
}

// sameFile says whether the open f is what path names now.
func sameFile(f *os.File, path string) bool {
	a, err1 := f.Stat()
	b, err2 := os.Stat(path)
	return err1 == nil && err2 == nil && os.SameFile(a, b)
}

// touch sets p's mtime to now, creating it.
func touch(p string) {
	now := time.Now()
	if err := os.Chtimes(p, now, now); err != nil {
		if f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY, 0o600); err == nil {
			f.Close()
		}
	}
}

func lastUsed(dir string) time.Time {
	fi, err := os.Stat(filepath.Join(dir, usedFile))
	if err != nil {
		return time.Time{}
	}
	return fi.ModTime()
}

// inUse says whether anyone holds a lease on the image directory.
func inUse(dir string) bool {
	f, err := os.Open(dir)
	if err != nil {
		return false
	}
	defer f.Close()
	return unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) != nil
}

// evict removes the image directory unless someone holds it. It moves the
// directory to the trash under the exclusive lock first, so no reader
// ever sees half a directory.
func (s *Store) evict(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return ErrNotPresent
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return ErrInUse
	}
	if !sameFile(f, dir) {
		return ErrNotPresent
	}
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	trash := filepath.Join(s.opt.Dir, "trash", filepath.Base(dir)+"."+hex.EncodeToString(rnd[:]))
	if err := os.Rename(dir, trash); err != nil {
		return fmt.Errorf("imagestore: evict %s: %w", dir, err)
	}
	f.Close()
	if err := os.RemoveAll(trash); err != nil {
		return fmt.Errorf("imagestore: evict %s: %w", dir, err)
	}
	return nil
}

// Remove removes an image by manifest digest or by a reference it was
// pulled as, and the references to it; ErrInUse if someone holds it.
func (s *Store) Remove(refOrDigest string) (*Image, error) {
	im, err := s.find(refOrDigest)
	if err != nil {
		return nil, err
	}
	if err := s.evict(im.dir); err != nil {
		return nil, err
	}
	s.forget(im.Digest)
	return im, nil
}

// find looks an image up by digest or by a reference recorded at a pull.
func (s *Store) find(refOrDigest string) (*Image, error) {
	if im, err := s.Get(refOrDigest); err == nil {
		return im, nil
	}
	r, err := parseRef(refOrDigest)
	if err != nil {
		return nil, err
	}
	if rec, ok := s.readRef(r.Name()); ok {
		return s.Get(rec.Image)
	}
	if d, ok := digestOf(r); ok {
		return s.Get(d)
	}
	return nil, ErrNotPresent
}

// forget drops the references that point at digest, and its cached meta.
func (s *Store) forget(digest string) {
	s.mu.Lock()
	delete(s.metas, digest)
	s.mu.Unlock()
	refs, _ := s.readRefs()
	for _, r := range refs {
		if r.Image == digest {
			os.Remove(s.refPath(r.Name))
		}
	}
}

// Prune evicts least recently used images no one holds until the store
// takes at most maxBytes (all unused images for maxBytes 0), never the
// image keep. It returns the evicted images.
func (s *Store) Prune(maxBytes int64, keep string) ([]*Image, error) {
	entries, err := s.List()
	if err != nil {
		return nil, err
	}
	var total int64
	for _, e := range entries {
		total += e.Bytes
	}
	var evicted []*Image
	// Least recently used first.
	for i := len(entries) - 1; i >= 0 && total > maxBytes; i-- {
		e := entries[i]
		if e.Digest == keep || e.InUse {
			continue
		}
		switch err := s.evict(e.dir); {
		case err == nil:
			s.forget(e.Digest)
			total -= e.Bytes
			evicted = append(evicted, e.Image)
			s.log.Info("image evicted", "digest", e.Digest, "ref", e.Ref, "bytes", e.Bytes)
		case errors.Is(err, ErrInUse), errors.Is(err, ErrNotPresent):
		default:
			return evicted, err
		}
	}
	return evicted, nil
}

// enforceCap prunes to MaxBytes after a pull, keeping the new image.
func (s *Store) enforceCap(keep string) {
	if s.opt.MaxBytes <= 0 {
		return
	}
	if _, err := s.Prune(s.opt.MaxBytes, keep); err != nil {
		s.log.Warn("evict images over the size cap", "err", err)
	}
}

// sortEntries orders by last use, most recent first.
func sortEntries(es []Entry) {
	sort.SliceStable(es, func(i, j int) bool { return es[i].LastUsed.After(es[j].LastUsed) })
}
