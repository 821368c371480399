package main

import (
	"bytes"
	"compress/zlib"
	"crypto/sha1"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// object is one Git object: its type (commit, tree, blob, tag) and
// content.
type object struct {
	kind string
	data []byte
}

// entry is one object of a pack as stored: whole, or a delta on a base.
type entry struct {
	kind    byte
	data    []byte
	baseOff int    // ofs-delta: the base's offset
	baseID  string // ref-delta: the base's ID
}

var packKinds = map[byte]string{1: "commit", 2: "tree", 3: "blob", 4: "tag"}

const (
	ofsDelta   = 6
	refDelta   = 7
	maxObjSize = 64 << 20
	// maxUnpacked bounds what a pack takes in memory once read: its
	// entries as stored plus every object resolved from them (a delta
	// of a few bytes may resolve to maxObjSize). A guest has little
	// memory.
	maxUnpacked = 256 << 20
)

// readPack reads a version 2 pack (its trailing SHA-1 checked), resolves
// its deltas and returns its objects by ID. limit bounds the bytes of its
// entries as stored plus those of the objects resolved (maxUnpacked).
func readPack(pack []byte, limit uint64) (map[string]object, error) {
	entries, order, total, err := parsePack(pack, limit)
	if err != nil {
		return nil, err
	}
	return resolve(entries, order, total, limit)
}

// parsePack reads a pack's entries as stored, by offset, in pack order,
// and the bytes they take (at most limit).
func parsePack(pack []byte, limit uint64) (map[int]*entry, []int, uint64, error) {
	if len(pack) < 32 || string(pack[:4]) != "PACK" || binary.BigEndian.Uint32(pack[4:8]) != 2 {
		return nil, nil, 0, errors.New("pack: not a version 2 pack")
	}
	sum := sha1.Sum(pack[:len(pack)-20])
	if !bytes.Equal(sum[:], pack[len(pack)-20:]) {
		return nil, nil, 0, errors.New("pack: bad trailing checksum")
	}
	count := binary.BigEndian.Uint32(pack[8:12])
	body := pack[:len(pack)-20]
	entries := map[int]*entry{}
	order := []int{}
	off, total := 12, uint64(0)
	for i := uint32(0); i < count; i++ {
		start := off
		if off >= len(body) {
			return nil, nil, 0, errors.New("pack: truncated")
		}
		c := body[off]
		off++
		kind, size, shift := (c>>4)&7, uint64(c&15), 4
		for c&0x80 != 0 {
			if off >= len(body) || shift > 56 {
				return nil, nil, 0, errors.New("pack: bad object header")
			}
			c = body[off]
			off++
			size |= uint64(c&0x7f) << shift
			shift += 7
		}
		if size > maxObjSize {
			return nil, nil, 0, fmt.Errorf("pack: an object of %d bytes", size)
		}
		if total += size; total > limit { // before it is inflated
			return nil, nil, 0, fmt.Errorf("pack: over %d bytes unpacked", limit)
		}
		e := &entry{kind: kind}
		switch kind {
		case ofsDelta:
			if off >= len(body) {
				return nil, nil, 0, errors.New("pack: truncated")
			}
			c = body[off]
			off++
			rel := int(c & 0x7f)
			for c&0x80 != 0 {
				if off >= len(body) || rel > 1<<40 {
					return nil, nil, 0, errors.New("pack: bad delta offset")
				}
				c = body[off]
				off++
				rel = ((rel + 1) << 7) | int(c&0x7f)
			}
			e.baseOff = start - rel
			if e.baseOff < 12 || entries[e.baseOff] == nil {
				return nil, nil, 0, errors.New("pack: delta against no object")
			}
		case refDelta:
			if off+20 > len(body) {
				return nil, nil, 0, errors.New("pack: truncated")
			}
			e.baseID = hex.EncodeToString(body[off : off+20])
			off += 20
		default:
			if packKinds[kind] == "" {
				return nil, nil, 0, fmt.Errorf("pack: object type %d", kind)
			}
		}
		rd := bytes.NewReader(body[off:])
		zr, err := zlib.NewReader(rd)
		if err != nil {
			return nil, nil, 0, fmt.Errorf("pack: %w", err)
		}
		// Reading up to size+1 bytes reaches the stream's end (and its
		// checksum) when it holds size bytes, and stops at once when it
		// holds more.
		data, err := io.ReadAll(io.LimitReader(zr, int64(size)+1))
		if err != nil || uint64(len(data)) != size {
			return nil, nil, 0, fmt.Errorf("pack: object at %d: %d bytes, want %d: %v", start, len(data), size, err)
		}
		off += int(rd.Size()) - rd.Len()
		e.data = data
		entries[start] = e
		order = append(order, start)
	}
	if off != len(body) {
		return nil, nil, 0, errors.New("pack: bytes after the last object")
	}
	return entries, order, total, nil
}

// resolve turns the pack's entries into objects: the whole ones first,
// then each delta once its base is resolved, found through a map from
// base (offset or ID) to the deltas on it, so each entry is visited
// once. total is what the entries take stored; each resolved delta adds
// its size, up to limit.
func resolve(entries map[int]*entry, order []int, total, limit uint64) (map[string]object, error) {
	objs := map[string]object{}
	onOffset := map[int][]int{} // base offset -> ofs-deltas on it
	onID := map[string][]int{}  // base ID -> ref-deltas on it
	var queue []int             // resolved entries whose dependents are not yet
	resolved := map[int]object{}
	ids := map[int]string{}
	for _, at := range order {
		switch e := entries[at]; e.kind {
		case ofsDelta:
			onOffset[e.baseOff] = append(onOffset[e.baseOff], at)
		case refDelta:
			onID[e.baseID] = append(onID[e.baseID], at)
		default:
			o := object{packKinds[e.kind], e.data}
			resolved[at], ids[at] = o, objectID(o)
			objs[ids[at]] = o
			queue = append(queue, at)
		}
	}
	for len(queue) > 0 {
		at := queue[0]
		queue = queue[1:]
		base, id := resolved[at], ids[at]
		deps := append(onOffset[at], onID[id]...)
		delete(onOffset, at)
		delete(onID, id) // a duplicate of the base resolves them once only
		for _, d := range deps {
			data, err := applyDelta(base.data, entries[d].data, min(maxObjSize, limit-total))
			if err != nil {
				if errors.Is(err, errTooBig) {
					return nil, fmt.Errorf("pack: over %d bytes unpacked", limit)
				}
				return nil, err
			}
			total += uint64(len(data))
			o := object{base.kind, data}
			resolved[d], ids[d] = o, objectID(o)
			objs[ids[d]] = o
			queue = append(queue, d)
		}
	}
	if len(resolved) != len(order) {
		return nil, errors.New("pack: a delta's base is missing (thin pack)")
	}
	return objs, nil
}

func objectID(o object) string {
	h := sha1.New()
	fmt.Fprintf(h, "%s %d\x00", o.kind, len(o.data))
	h.Write(o.data)
	return hex.EncodeToString(h.Sum(nil))
}

// errTooBig is a delta whose result is over the size applyDelta may make.
var errTooBig = errors.New("pack: a delta's result is too big")

// applyDelta applies a Git delta to base, making at most max bytes.
func applyDelta(base, delta []byte, max uint64) ([]byte, error) {
	bad := errors.New("pack: bad delta")
	varint := func() (uint64, error) {
		var v uint64
		for shift := 0; ; shift += 7 {
			if len(delta) == 0 || shift > 56 {
				return 0, bad
			}
			c := delta[0]
			delta = delta[1:]
			v |= uint64(c&0x7f) << shift
			if c&0x80 == 0 {
				return v, nil
			}
		}
	}
	srcSize, err := varint()
	if err != nil || srcSize != uint64(len(base)) {
		return nil, bad
	}
	dstSize, err := varint()
	if err != nil {
		return nil, bad
	}
	if dstSize > max {
		return nil, errTooBig
	}
	out := make([]byte, 0, dstSize)
	for len(delta) > 0 {
		c := delta[0]
		delta = delta[1:]
		if c&0x80 == 0 { // insert c bytes
			if c == 0 || int(c) > len(delta) {
				return nil, bad
			}
			out = append(out, delta[:c]...)
			delta = delta[c:]
			continue
		}
		var off, n uint64
		for i := 0; i < 7; i++ {
			if c&(1<<i) == 0 {
				continue
			}
			if len(delta) == 0 {
				return nil, bad
			}
			if i < 4 {
				off |= uint64(delta[0]) << (8 * i)
			} else {
				n |= uint64(delta[0]) << (8 * (i - 4))
			}
			delta = delta[1:]
		}
		if n == 0 {
			n = 0x10000
		}
		if off+n > uint64(len(base)) {
			return nil, bad
		}
		out = append(out, base[off:off+n]...)
	}
	if uint64(len(out)) != dstSize {
		return nil, bad
	}
	return out, nil
}

// Bounds on a check-out: a tree may name one blob, or one subtree, many
// times, so a small pack can describe a huge work tree.
const (
	maxCheckoutFiles = 100_000
	maxCheckoutBytes = 512 << 20
)

// budget is what a check-out may still write: entries (files,
// directories, links) and bytes.
type budget struct{ files, bytes int64 }

func (b *budget) take(bytes int) error {
	b.files--
	b.bytes -= int64(bytes)
	if b.files < 0 || b.bytes < 0 {
		return errors.New("checkout: the tree is bigger than a job's work tree may be")
	}
	return nil
}

// checkout writes the tree of commit sha into dir, within b.
func checkout(objs map[string]object, sha, dir string, b budget) error {
	c, ok := objs[sha]
	if !ok || c.kind != "commit" {
		return fmt.Errorf("reference is not a tree: %s", sha)
	}
	tree, ok := strings.CutPrefix(string(c.data), "tree ")
	if !ok || len(tree) < 40 {
		return fmt.Errorf("commit %s has no tree", sha)
	}
	// A fresh check-out, as gitlab-runner's fetch leaves the work tree
	// (git clean -ffdx, git checkout -f): nothing of an earlier job stays.
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return writeTree(objs, tree[:40], dir, &b)
}

func writeTree(objs map[string]object, id, dir string, left *budget) error {
	t, ok := objs[id]
	if !ok || t.kind != "tree" {
		return fmt.Errorf("tree %s missing from the pack", id)
	}
	for b := t.data; len(b) > 0; {
		sp := bytes.IndexByte(b, ' ')
		nul := bytes.IndexByte(b, 0)
		if sp < 0 || nul < sp || nul+21 > len(b) {
			return fmt.Errorf("tree %s is malformed", id)
		}
		mode, name, child := string(b[:sp]), string(b[sp+1:nul]), hex.EncodeToString(b[nul+1:nul+21])
		b = b[nul+21:]
		// A hostile server could name an entry to escape dir.
		if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\\") || strings.EqualFold(name, ".git") {
			return fmt.Errorf("tree %s has an entry named %q", id, name)
		}
		path := filepath.Join(dir, name)
		size := 0
		if blob, ok := objs[child]; ok && blob.kind == "blob" {
			size = len(blob.data)
		}
		if err := left.take(size); err != nil {
			return err
		}
		switch mode {
		case "40000":
			// Mkdir and O_EXCL below: a second entry of the same name
			// (after a symlink, say) cannot write through the first.
			if err := os.Mkdir(path, 0o755); err != nil {
				return err
			}
			if err := writeTree(objs, child, path, left); err != nil {
				return err
			}
		case "100644", "100755":
			blob, ok := objs[child]
			if !ok || blob.kind != "blob" {
				return fmt.Errorf("blob %s missing from the pack", child)
			}
			perm := os.FileMode(0o644)
			if mode == "100755" {
				perm = 0o755
			}
			if err := writeNew(path, blob.data, perm); err != nil {
				return err
			}
		case "120000":
			blob, ok := objs[child]
			if !ok || blob.kind != "blob" {
				return fmt.Errorf("blob %s missing from the pack", child)
			}
			if err := os.Symlink(string(blob.data), path); err != nil {
				return err
			}
		case "160000": // a submodule: GIT_SUBMODULE_STRATEGY=none leaves it empty
			if err := os.Mkdir(path, 0o755); err != nil {
				return err
			}
		default:
			return fmt.Errorf("tree %s: mode %s", id, mode)
		}
	}
	return nil
}

// writeNew writes a file that must not exist yet.
func writeNew(path string, data []byte, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
