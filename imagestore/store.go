// Package imagestore turns OCI images into guest root file systems: it
// pulls an image once per manifest digest (through registry mirrors, with
// registry credentials), flattens its layers into one read-only file
// system image (erofs or ext4) and keeps it on disk for every VM that boots
// it. A VM's share of the work is then O(1): a lease on the image, not a
// copy of it.
//
// Everything on disk is written to a temporary directory and renamed into
// place, so a crash mid-pull leaves only a temporary directory, which the
// next Open removes. Leases are shared flock(2) locks on an image's
// directory: the kernel counts them across processes and drops them with a
// process that dies, and eviction takes the lock exclusively, so an image
// a VM uses is never removed.
package imagestore

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"
)

// File system types an image can be packed as.
const (
	FSErofs = "erofs"
	FSExt4  = "ext4"
)

// ErrNotPresent is returned when an image is not in the store and the
// pull policy forbids fetching it.
var ErrNotPresent = errors.New("image not present in the store")

// ErrInUse is returned when removing an image a VM (or a pool) holds.
var ErrInUse = errors.New("image in use")

// Options configure a Store.
type Options struct {
	// Dir holds the store; created if missing.
	Dir string
	// MaxBytes caps the disk the images take; least recently used images
	// no one holds are evicted past it. 0: no cap.
	MaxBytes int64
	// FSType is what images are packed as: FSErofs (default) or FSExt4.
	FSType string
	// Mirrors are pull-through caches to try before a registry, by the
	// registry's host ("docker.io" for Docker Hub).
	Mirrors map[string][]string
	// Keychain authenticates to registries and mirrors; nil: anonymous.
	Keychain authn.Keychain
	// Downloads is how many layers of an image download at once; 0:
	// DefaultDownloads.
	Downloads int
	// Platform is the image platform chosen from multi-platform images;
	// zero: linux/amd64.
	Platform v1.Platform
	Log      *slog.Logger
}

// Store is an on-disk cache of flattened images. It is safe for
// concurrent use, and several processes may share one directory.
type Store struct {
	opt Options
	log *slog.Logger

	pulls  flight[*Image] // by reference and policy
	builds flight[*Image] // by manifest digest

	mu    sync.Mutex
	metas map[string]*Image // read meta files, by digest; they never change

	// afterLayer, when set (tests), is called after each layer is applied.
	afterLayer func(i int)
}

// Image is one flattened image in the store.
type Image struct {
	// Digest is the image manifest's digest (for a multi-platform image,
	// the chosen platform's manifest).
	Digest string `json:"digest"`
	// Ref is the reference it was first pulled as.
	Ref    string `json:"ref"`
	FSType string `json:"fs_type"`
	// Bytes is the disk the image takes in the store (allocated blocks).
	Bytes int64 `json:"bytes"`
	// ContentBytes is the size of the files it holds; Files, how many
	// entries.
	ContentBytes int64 `json:"content_bytes"`
	Files        int   `json:"files"`
	Layers       int   `json:"layers"`
	// PulledBytes is what the registry sent for it.
	PulledBytes int64     `json:"pulled_bytes"`
	Created     time.Time `json:"created"`
	// Config is the part of the OCI image config that says how to run a
	// process in it.
	Config RunConfig `json:"config"`
	// Passwd and Group are the image's /etc/passwd and /etc/group, so the
	// host can resolve the image's user without opening the file system.
	Passwd string `json:"passwd,omitempty"`
	Group  string `json:"group,omitempty"`

	dir string
}

// RunConfig is how the image says its processes run.
type RunConfig struct {
	User       string   `json:"user,omitempty"`
	Env        []string `json:"env,omitempty"`
	WorkingDir string   `json:"working_dir,omitempty"`
	Entrypoint []string `json:"entrypoint,omitempty"`
	Cmd        []string `json:"cmd,omitempty"`
}

// Path is the file system image file, to attach to a VM read-only.
func (im *Image) Path() string { return filepath.Join(im.dir, rootFile) }

// Files in an image's directory.
const (
	rootFile  = "root.img"
	metaFile  = "meta.json"
	indexFile = "files.json.gz"
	usedFile  = "used" // its mtime is the last use, for LRU eviction
)

// Open opens (creating) the store in opt.Dir and removes what crashed
// pulls and evictions left there.
func Open(opt Options) (*Store, error) {
	if opt.Dir == "" {
		return nil, errors.New("imagestore: no directory")
	}
	switch opt.FSType {
	case "":
		opt.FSType = FSErofs
	case FSErofs, FSExt4:
	default:
		return nil, fmt.Errorf("imagestore: unknown file system type %q", opt.FSType)
	}
	if opt.Log == nil {
		opt.Log = slog.New(slog.DiscardHandler)
	}
	if opt.Keychain == nil {
		opt.Keychain = authn.NewMultiKeychain()
	}
	if opt.Platform.OS == "" {
		opt.Platform = v1.Platform{OS: "linux", Architecture: "amd64"}
	}
	s := &Store{opt: opt, log: opt.Log, metas: map[string]*Image{}}
	for _, d := range []string{"images", "refs", "tmp", "trash"} {
		if err := os.MkdirAll(filepath.Join(opt.Dir, d), 0o700); err != nil {
			return nil, fmt.Errorf("imagestore: %w", err)
		}
	}
	if err := s.cleanLeftovers(); err != nil {
		return nil, err
	}
	return s, nil
}

// Dir is the store's directory.
func (s *Store) Dir() string { return s.opt.Dir }

// FSType is the file system new images are packed as.
func (s *Store) FSType() string { return s.opt.FSType }

func (s *Store) imageDir(digest string) string {
	return filepath.Join(s.opt.Dir, "images", strings.ReplaceAll(digest, ":", "-"))
}

// cleanLeftovers removes temporary directories no live process holds (a
// pull that crashed) and anything in the trash (an eviction that
// crashed).
func (s *Store) cleanLeftovers() error {
	tmp := filepath.Join(s.opt.Dir, "tmp")
	parent, err := os.Open(tmp)
	if err != nil {
		return fmt.Errorf("imagestore: %w", err)
	}
	defer parent.Close()
	// Exclusive: no pull is between creating its directory and locking it.
	if err := unix.Flock(int(parent.Fd()), unix.LOCK_EX); err != nil {
		return fmt.Errorf("imagestore: lock %s: %w", tmp, err)
	}
	entries, err := os.ReadDir(tmp)
	if err != nil {
		return fmt.Errorf("imagestore: %w", err)
	}
	for _, e := range entries {
		p := filepath.Join(tmp, e.Name())
		f, err := os.Open(p)
		if err != nil {
			continue
		}
		// A live pull holds its directory locked; a dead one's lock went
		// with its process.
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			if rmErr := os.RemoveAll(p); rmErr != nil {
				s.log.Warn("remove leftover of a crashed pull", "path", p, "err", rmErr)
			} else {
				s.log.Info("removed leftover of a crashed pull", "path", p)
			}
		}
		f.Close()
	}
	trash := filepath.Join(s.opt.Dir, "trash")
	entries, err = os.ReadDir(trash)
	if err != nil {
		return fmt.Errorf("imagestore: %w", err)
	}
	for _, e := range entries {
		_ = os.RemoveAll(filepath.Join(trash, e.Name()))
	}
	return nil
}

// Get returns the image with the manifest digest, if the store has it.
func (s *Store) Get(digest string) (*Image, error) {
	s.mu.Lock()
	im, ok := s.metas[digest]
	s.mu.Unlock()
	if ok {
		if _, err := os.Stat(im.dir); err == nil {
			return im, nil
		}
		s.mu.Lock()
		delete(s.metas, digest)
		s.mu.Unlock()
	}
	return s.readMeta(s.imageDir(digest))
}

// readMeta reads an image directory's meta file; a missing directory is
// ErrNotPresent.
func (s *Store) readMeta(dir string) (*Image, error) {
	b, err := os.ReadFile(filepath.Join(dir, metaFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNotPresent
	}
	if err != nil {
		return nil, fmt.Errorf("imagestore: %w", err)
	}
	im := &Image{}
	if err := json.Unmarshal(b, im); err != nil {
		return nil, fmt.Errorf("imagestore: %s: %w", dir, err)
	}
	im.dir = dir
	s.mu.Lock()
	s.metas[im.Digest] = im
	s.mu.Unlock()
	return im, nil
}

// Entry is an image as List shows it.
type Entry struct {
	*Image
	Refs     []string
	LastUsed time.Time
	InUse    bool
}

// List returns the images in the store, most recently used first.
func (s *Store) List() ([]Entry, error) {
	dirs, err := os.ReadDir(filepath.Join(s.opt.Dir, "images"))
	if err != nil {
		return nil, fmt.Errorf("imagestore: %w", err)
	}
	refs, err := s.readRefs()
	if err != nil {
		return nil, err
	}
	var out []Entry
	for _, d := range dirs {
		dir := filepath.Join(s.opt.Dir, "images", d.Name())
		im, err := s.readMeta(dir)
		if err != nil {
			continue // removed meanwhile
		}
		e := Entry{Image: im, LastUsed: lastUsed(dir), InUse: inUse(dir)}
		for _, r := range refs {
			if r.Image == im.Digest {
				e.Refs = append(e.Refs, r.Name)
			}
		}
		out = append(out, e)
	}
	sortEntries(out)
	return out, nil
}

// refRecord is what a tag resolved to at the last pull.
type refRecord struct {
	Name string `json:"name"`
	// Resolved is what the registry answered for the reference (an index
	// digest for a multi-platform image); Image is the manifest digest
	// the store keeps.
	Resolved string    `json:"resolved"`
	Image    string    `json:"image"`
	Updated  time.Time `json:"updated"`
}

func (s *Store) refPath(name string) string {
	h := sha256.Sum256([]byte(name))
	return filepath.Join(s.opt.Dir, "refs", hex.EncodeToString(h[:16])+".json")
}

func (s *Store) readRef(name string) (refRecord, bool) {
	var r refRecord
	b, err := os.ReadFile(s.refPath(name))
	if err != nil || json.Unmarshal(b, &r) != nil || r.Name != name {
		return refRecord{}, false
	}
	return r, true
}

func (s *Store) writeRef(r refRecord) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return writeFileAtomic(s.refPath(r.Name), b)
}

func (s *Store) readRefs() ([]refRecord, error) {
	entries, err := os.ReadDir(filepath.Join(s.opt.Dir, "refs"))
	if err != nil {
		return nil, fmt.Errorf("imagestore: %w", err)
	}
	var out []refRecord
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(s.opt.Dir, "refs", e.Name()))
		var r refRecord
		if err == nil && json.Unmarshal(b, &r) == nil {
			out = append(out, r)
		}
	}
	return out, nil
}

// writeFileAtomic replaces p with data through a temporary file and a
// rename, so readers see the old content or the new, never a mix.
func writeFileAtomic(p string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(p), ".tmp-*")
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), p)
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}
