package initramfs

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"strconv"
	"testing"
)

// entry is one parsed newc entry.
type entry struct {
	name         string
	ino, mode    uint32
	uid, gid     uint32
	nlink, mtime uint32
	rmajor       uint32
	rminor       uint32
	data         []byte
}

// parseNewc reads one newc archive from the start of b, checking the
// format strictly (magic, padding with zeros, trailer), and returns its
// entries and the bytes it used, including the trailer's padding.
func parseNewc(b []byte) ([]entry, int, error) {
	var out []entry
	off := 0
	for {
		if off%4 != 0 {
			return nil, 0, fmt.Errorf("entry at %d not 4-aligned", off)
		}
		if len(b)-off < newcHeaderSize {
			return nil, 0, fmt.Errorf("truncated header at %d", off)
		}
		h := b[off : off+newcHeaderSize]
		if string(h[:6]) != newcMagic {
			return nil, 0, fmt.Errorf("bad magic %q at %d", h[:6], off)
		}
		var f [13]uint32
		for i := range f {
			v, err := strconv.ParseUint(string(h[6+8*i:14+8*i]), 16, 32)
			if err != nil {
				return nil, 0, fmt.Errorf("field %d at %d: %v", i, off, err)
			}
			f[i] = uint32(v)
		}
		size, namesize := int(f[6]), int(f[11])
		nameStart := off + newcHeaderSize
		if nameStart+namesize > len(b) || namesize == 0 || b[nameStart+namesize-1] != 0 {
			return nil, 0, fmt.Errorf("bad name at %d", off)
		}
		name := string(b[nameStart : nameStart+namesize-1])
		dataStart, err := skipPad(b, nameStart+namesize)
		if err != nil {
			return nil, 0, fmt.Errorf("%s: name padding: %v", name, err)
		}
		if name == trailerName {
			return out, dataStart, nil
		}
		if dataStart+size > len(b) {
			return nil, 0, fmt.Errorf("%s: truncated data", name)
		}
		e := entry{name: name, ino: f[0], mode: f[1], uid: f[2], gid: f[3], nlink: f[4], mtime: f[5],
			rmajor: f[9], rminor: f[10], data: b[dataStart : dataStart+size]}
		if f[7] != 0 || f[8] != 0 || f[12] != 0 {
			return nil, 0, fmt.Errorf("%s: dev or check not zero", name)
		}
		out = append(out, e)
		if off, err = skipPad(b, dataStart+size); err != nil {
			return nil, 0, fmt.Errorf("%s: data padding: %v", name, err)
		}
	}
}

// skipPad checks the zero padding from i to the next multiple of 4.
func skipPad(b []byte, i int) (int, error) {
	end := (i + 3) &^ 3
	if end > len(b) {
		return 0, fmt.Errorf("truncated padding")
	}
	for _, c := range b[i:end] {
		if c != 0 {
			return 0, fmt.Errorf("non-zero padding byte")
		}
	}
	return end, nil
}

// unpackInitrd reads an initramfs the way the kernel's unpack_to_rootfs
// does: zero bytes are skipped; an uncompressed archive must start at a
// 4-byte-aligned offset; gzip members are decompressed one at a time; later
// entries replace earlier ones. It returns each archive's entries.
func unpackInitrd(b []byte) ([][]entry, error) {
	var archives [][]entry
	off := 0
	for off < len(b) {
		switch {
		case b[off] == 0:
			off++
		case b[off] == '0' && off%4 == 0:
			es, n, err := parseNewc(b[off:])
			if err != nil {
				return nil, fmt.Errorf("archive at %d: %v", off, err)
			}
			archives = append(archives, es)
			off += n
		case b[off] == 0x1f && off+1 < len(b) && b[off+1] == 0x8b:
			r := bytes.NewReader(b[off:])
			zr, err := gzip.NewReader(r)
			if err != nil {
				return nil, err
			}
			zr.Multistream(false)
			plain, err := io.ReadAll(zr)
			if err != nil {
				return nil, fmt.Errorf("gzip at %d: %v", off, err)
			}
			es, n, err := parseNewc(plain)
			if err != nil {
				return nil, fmt.Errorf("archive in gzip at %d: %v", off, err)
			}
			for _, c := range plain[n:] {
				if c != 0 {
					return nil, fmt.Errorf("junk at the end of compressed archive at %d", off)
				}
			}
			archives = append(archives, es)
			off = len(b) - r.Len()
		default:
			return nil, fmt.Errorf("invalid magic at %d (offset %% 4 = %d)", off, off%4)
		}
	}
	return archives, nil
}

func byName(es []entry) map[string]entry {
	m := map[string]entry{}
	for _, e := range es {
		m[e.name] = e
	}
	return m
}

func TestUnpackInitrdWantsAlignment(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	w.File("a", 0o644, 0, 0, []byte("x"))
	w.Close()
	if _, err := unpackInitrd(append([]byte("\x00\x00\x00\x00"), buf.Bytes()...)); err != nil {
		t.Errorf("zeros then an aligned archive: %v", err)
	}
	if _, err := unpackInitrd(append([]byte("\x00\x00\x00"), buf.Bytes()...)); err == nil {
		t.Error("an unaligned archive was accepted")
	}
}
