package main

import (
	"bytes"
	"compress/zlib"
	"crypto/sha1"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

// packOf builds a version 2 pack of entries (kind, raw data, and for a
// ref-delta its base's ID), as git's pack format describes.
func packOf(t *testing.T, entries []entry) []byte {
	t.Helper()
	var b bytes.Buffer
	b.WriteString("PACK")
	_ = binary.Write(&b, binary.BigEndian, uint32(2))
	_ = binary.Write(&b, binary.BigEndian, uint32(len(entries)))
	for _, e := range entries {
		size := len(e.data)
		c := byte(e.kind<<4) | byte(size&15)
		size >>= 4
		for size > 0 {
			b.WriteByte(c | 0x80)
			c = byte(size & 0x7f)
			size >>= 7
		}
		b.WriteByte(c)
		if e.kind == refDelta {
			id, err := hex.DecodeString(e.baseID)
			must(t, err)
			b.Write(id)
		}
		zw := zlib.NewWriter(&b)
		_, _ = zw.Write(e.data)
		must(t, zw.Close())
	}
	sum := sha1.Sum(b.Bytes())
	b.Write(sum[:])
	return b.Bytes()
}

func varint(v int) []byte {
	var out []byte
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if v == 0 {
			return append(out, c)
		}
		out = append(out, c|0x80)
	}
}

// TestDeltaBombIsBounded: a pack of one 64 KiB blob and eight deltas of
// 18 bytes each, every one resolving to 1 MiB (sixteen copies of the
// base), is a few KiB stored but 8 MiB resolved: with a 4 MiB bound it is
// refused; with a 16 MiB bound it reads (the positive control).
func TestDeltaBombIsBounded(t *testing.T) {
	base := bytes.Repeat([]byte("a"), 1<<16)
	baseID := objectID(object{"blob", base})
	delta := append(varint(len(base)), varint(1<<20)...)
	delta = append(delta, bytes.Repeat([]byte{0x80}, 16)...) // copy 0x10000 bytes from 0, sixteen times
	es := []entry{{kind: 3, data: base}}
	for range 8 {
		es = append(es, entry{kind: refDelta, data: delta, baseID: baseID})
	}
	pack := packOf(t, es)
	if len(pack) > 4<<10 {
		t.Fatalf("the bomb is %d bytes, meant to be small", len(pack))
	}
	if _, err := readPack(pack, 4<<20); err == nil || !strings.Contains(err.Error(), "unpacked") {
		t.Fatalf("a pack resolving to 8 MiB read under a 4 MiB bound: %v", err)
	}
	objs, err := readPack(pack, 16<<20)
	if err != nil || len(objs) != 2 {
		t.Fatalf("positive control under a 16 MiB bound: %d objects, %v", len(objs), err)
	}
}

// treeOf is a tree object of entries (mode, name, child ID).
func treeOf(entries ...[3]string) object {
	var b bytes.Buffer
	for _, e := range entries {
		id, _ := hex.DecodeString(e[2])
		fmt.Fprintf(&b, "%s %s\x00", e[0], e[1])
		b.Write(id)
	}
	return object{"tree", b.Bytes()}
}

// TestCheckoutIsBounded: a commit whose tree names one 1 KiB blob ten
// times in each of ten directories of ten directories (1000 files, 1 MB
// written, from five objects) is refused over a bound of files or of
// bytes, and written within both (the positive control).
func TestCheckoutIsBounded(t *testing.T) {
	objs := map[string]object{}
	add := func(o object) string {
		id := objectID(o)
		objs[id] = o
		return id
	}
	id := add(object{"blob", bytes.Repeat([]byte("x"), 1000)})
	for level, mode := range []string{"100644", "40000", "40000"} {
		var es [][3]string
		for i := range 10 {
			es = append(es, [3]string{mode, fmt.Sprintf("e%d-%d", level, i), id})
		}
		id = add(treeOf(es...))
	}
	commit := add(object{"commit", []byte("tree " + id + "\nauthor a <a@a> 0 +0000\ncommitter a <a@a> 0 +0000\n\nbomb\n")})
	for _, tc := range []struct {
		b  budget
		ok bool
	}{
		{budget{files: 500, bytes: 1 << 30}, false},
		{budget{files: 10_000, bytes: 500_000}, false},
		{budget{files: 10_000, bytes: 2 << 20}, true},
	} {
		err := checkout(objs, commit, filepath.Join(t.TempDir(), "co"), tc.b)
		if (err == nil) != tc.ok {
			t.Errorf("budget %+v: %v, want ok %v", tc.b, err, tc.ok)
		}
	}
}

// TestProjectDirRefusesNamesThatLeaveTheBuildsDir: the fresh check-out
// removes the project's directory first, so a project_name that is not
// one directory name under builds_dir is refused; a real one is not.
func TestProjectDirRefusesNamesThatLeaveTheBuildsDir(t *testing.T) {
	for _, name := range []string{"", ".", "..", "acme/app", "../x", `a\b`, "a\x00b"} {
		if d, err := projectDir("/builds", name); err == nil {
			t.Errorf("project_name %q accepted: %s", name, d)
		}
	}
	for _, name := range []string{"app", "My App (2)", "..app"} {
		if d, err := projectDir("/builds", name); err != nil || d != filepath.Join("/builds", name) {
			t.Errorf("project_name %q: %s, %v", name, d, err)
		}
	}
}
