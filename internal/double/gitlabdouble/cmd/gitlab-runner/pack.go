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

var packKinds = map[byte]string{1: "commit", 2: "tree", 3: "blob", 4: "tag"}

const (
	ofsDelta   = 6
	refDelta   = 7
	maxObjSize = 64 << 20
	// maxUnpacked bounds what a pack's objects take unpacked (deltas
	// as stored).
	maxUnpacked = 1 << 30
)

// readPack reads a version 2 pack (its trailing SHA-1 checked), resolves
// its deltas and returns its objects by ID.
func readPack(pack []byte) (map[string]object, error) {
	if len(pack) < 32 || string(pack[:4]) != "PACK" || binary.BigEndian.Uint32(pack[4:8]) != 2 {
		return nil, errors.New("pack: not a version 2 pack")
	}
	sum := sha1.Sum(pack[:len(pack)-20])
	if !bytes.Equal(sum[:], pack[len(pack)-20:]) {
		return nil, errors.New("pack: bad trailing checksum")
	}
	count := binary.BigEndian.Uint32(pack[8:12])
	body := pack[:len(pack)-20]
	type entry struct {
		kind    byte
		data    []byte
		baseOff int    // ofs-delta: the base's offset
		baseID  string // ref-delta: the base's ID
	}
	entries := map[int]*entry{}
	order := []int{}
	off, total := 12, uint64(0)
	for i := uint32(0); i < count; i++ {
		start := off
		if off >= len(body) {
			return nil, errors.New("pack: truncated")
		}
		c := body[off]
		off++
		kind, size, shift := (c>>4)&7, uint64(c&15), 4
		for c&0x80 != 0 {
			if off >= len(body) || shift > 56 {
				return nil, errors.New("pack: bad object header")
			}
			c = body[off]
			off++
			size |= uint64(c&0x7f) << shift
			shift += 7
		}
		if size > maxObjSize {
			return nil, fmt.Errorf("pack: an object of %d bytes", size)
		}
		e := &entry{kind: kind}
		switch kind {
		case ofsDelta:
			if off >= len(body) {
				return nil, errors.New("pack: truncated")
			}
			c = body[off]
			off++
			rel := int(c & 0x7f)
			for c&0x80 != 0 {
				if off >= len(body) || rel > 1<<40 {
					return nil, errors.New("pack: bad delta offset")
				}
				c = body[off]
				off++
				rel = ((rel + 1) << 7) | int(c&0x7f)
			}
			e.baseOff = start - rel
			if e.baseOff < 12 || entries[e.baseOff] == nil {
				return nil, errors.New("pack: delta against no object")
			}
		case refDelta:
			if off+20 > len(body) {
				return nil, errors.New("pack: truncated")
			}
			e.baseID = hex.EncodeToString(body[off : off+20])
			off += 20
		default:
			if packKinds[kind] == "" {
				return nil, fmt.Errorf("pack: object type %d", kind)
			}
		}
		rd := bytes.NewReader(body[off:])
		zr, err := zlib.NewReader(rd)
		if err != nil {
			return nil, fmt.Errorf("pack: %w", err)
		}
		// Reading up to size+1 bytes reaches the stream's end (and its
		// checksum) when it holds size bytes, and stops at once when it
		// holds more.
		data, err := io.ReadAll(io.LimitReader(zr, int64(size)+1))
		if err != nil || uint64(len(data)) != size {
			return nil, fmt.Errorf("pack: object at %d: %d bytes, want %d: %v", start, len(data), size, err)
		}
		off += int(rd.Size()) - rd.Len()
		if total += size; total > maxUnpacked {
			return nil, fmt.Errorf("pack: over %d bytes unpacked", maxUnpacked)
		}
		e.data = data
		entries[start] = e
		order = append(order, start)
	}
	if off != len(body) {
		return nil, errors.New("pack: bytes after the last object")
	}
	objs := map[string]object{}
	resolved := map[int]object{}
	// Resolve in passes: a ref-delta's base may come later in the pack.
	for pending := len(order); pending > 0; {
		progress := false
		for _, at := range order {
			if _, done := resolved[at]; done {
				continue
			}
			e := entries[at]
			var o object
			switch e.kind {
			case ofsDelta, refDelta:
				base, ok := resolved[e.baseOff]
				if e.kind == refDelta {
					base, ok = objs[e.baseID]
				}
				if !ok {
					continue
				}
				data, err := applyDelta(base.data, e.data)
				if err != nil {
					return nil, err
				}
				o = object{base.kind, data}
			default:
				o = object{packKinds[e.kind], e.data}
			}
			resolved[at] = o
			objs[objectID(o)] = o
			pending--
			progress = true
		}
		if !progress {
			return nil, errors.New("pack: a delta's base is missing (thin pack)")
		}
	}
	return objs, nil
}

func objectID(o object) string {
	h := sha1.New()
	fmt.Fprintf(h, "%s %d\x00", o.kind, len(o.data))
	h.Write(o.data)
	return hex.EncodeToString(h.Sum(nil))
}

// applyDelta applies a Git delta to base.
func applyDelta(base, delta []byte) ([]byte, error) {
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
	if err != nil || dstSize > maxObjSize {
		return nil, bad
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

// checkout writes the tree of commit sha into dir.
func checkout(objs map[string]object, sha, dir string) error {
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
	return writeTree(objs, tree[:40], dir)
}

func writeTree(objs map[string]object, id, dir string) error {
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
		switch mode {
		case "40000":
			// Mkdir and O_EXCL below: a second entry of the same name
			// (after a symlink, say) cannot write through the first.
			if err := os.Mkdir(path, 0o755); err != nil {
				return err
			}
			if err := writeTree(objs, child, path); err != nil {
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
