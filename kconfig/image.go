package kconfig

import (
	"bytes"
	"compress/bzip2"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/klauspost/compress/zstd"
)

// ErrNoEmbeddedConfig: the image carries no configuration (a kernel built
// without CONFIG_IKCONFIG), or it is in a payload this package does not
// decompress.
var ErrNoEmbeddedConfig = errors.New("no embedded kernel configuration")

// maxKernel caps a decompressed bzImage payload.
const maxKernel = 512 << 20

// The markers around the gzipped configuration CONFIG_IKCONFIG embeds.
var (
	ikcfgStart = []byte("IKCFG_ST")
	ikcfgEnd   = []byte("IKCFG_ED")
)

// Embedded returns the configuration a kernel image embeds: an ELF
// vmlinux holds it as is, a bzImage in its compressed payload.
func Embedded(img []byte) ([]byte, error) {
	if bytes.HasPrefix(img, []byte("\x7fELF")) {
		return ikconfig(img)
	}
	payload, err := bzPayload(img)
	if err != nil {
		return nil, err
	}
	vmlinux, err := decompress(payload)
	if err != nil {
		return nil, err
	}
	return ikconfig(vmlinux)
}

// ikconfig unzips the configuration between the IKCONFIG markers.
func ikconfig(b []byte) ([]byte, error) {
	i := bytes.Index(b, ikcfgStart)
	if i < 0 {
		return nil, ErrNoEmbeddedConfig
	}
	rest := b[i+len(ikcfgStart):]
	if j := bytes.Index(rest, ikcfgEnd); j >= 0 {
		rest = rest[:j]
	}
	zr, err := gzip.NewReader(bytes.NewReader(rest))
	if err != nil {
		return nil, fmt.Errorf("embedded kernel configuration: %w", err)
	}
	cfg, err := io.ReadAll(io.LimitReader(zr, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("embedded kernel configuration: %w", err)
	}
	return cfg, nil
}

// bzPayload is the compressed kernel of a bzImage, located by the x86 boot
// protocol's header (2.08 and later): payload_offset and payload_length,
// from the start of the protected-mode code after the setup sectors.
func bzPayload(img []byte) ([]byte, error) {
	if len(img) < 0x250 || string(img[0x202:0x206]) != "HdrS" {
		return nil, fmt.Errorf("neither an ELF vmlinux nor a bzImage: %w", ErrNoEmbeddedConfig)
	}
	if binary.LittleEndian.Uint16(img[0x206:]) < 0x0208 {
		return nil, fmt.Errorf("bzImage boot protocol older than 2.08 names no payload: %w", ErrNoEmbeddedConfig)
	}
	setup := int(img[0x1f1])
	if setup == 0 {
		setup = 4
	}
	start := (setup+1)*512 + int(binary.LittleEndian.Uint32(img[0x248:]))
	end := start + int(binary.LittleEndian.Uint32(img[0x24c:]))
	if start < 0 || end > len(img) || start >= end {
		return nil, fmt.Errorf("bzImage payload [%d, %d) is outside the %d-byte file", start, end, len(img))
	}
	return img[start:end], nil
}

// decompress unpacks a gzip, zstd or bzip2 payload; other compressions
// wrap ErrNoEmbeddedConfig, naming theirs.
func decompress(p []byte) ([]byte, error) {
	var r io.Reader
	switch {
	case bytes.HasPrefix(p, []byte{0x1f, 0x8b}):
		zr, err := gzip.NewReader(bytes.NewReader(p))
		if err != nil {
			return nil, fmt.Errorf("bzImage payload: %w", err)
		}
		zr.Multistream(false)
		r = zr
	case bytes.HasPrefix(p, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		zr, err := zstd.NewReader(bytes.NewReader(p), zstd.WithDecoderMaxMemory(maxKernel))
		if err != nil {
			return nil, fmt.Errorf("bzImage payload: %w", err)
		}
		defer zr.Close()
		r = zr
	case bytes.HasPrefix(p, []byte("BZh")):
		r = bzip2.NewReader(bytes.NewReader(p))
	default:
		return nil, fmt.Errorf("bzImage payload compressed with %s, which is not read: %w", compression(p), ErrNoEmbeddedConfig)
	}
	// The build appends the decompressed size after the stream (size_append),
	// which a decoder may take for a bad next frame: what it gave is kept.
	b, err := io.ReadAll(io.LimitReader(r, maxKernel))
	if err != nil && len(b) == 0 {
		return nil, fmt.Errorf("decompressing the bzImage payload: %w", err)
	}
	return b, nil
}

// compression names a payload's compression by its magic.
func compression(p []byte) string {
	switch {
	case bytes.HasPrefix(p, []byte{0xfd, '7', 'z', 'X', 'Z', 0}):
		return "xz"
	case bytes.HasPrefix(p, []byte{0x02, 0x21, 0x4c, 0x18}):
		return "lz4"
	case bytes.HasPrefix(p, []byte{0x5d, 0, 0}):
		return "lzma"
	case bytes.HasPrefix(p, []byte{0x89, 'L', 'Z', 'O'}):
		return "lzo"
	}
	return "an unknown compression"
}

// headerVersion is the kernel release a bzImage's header names (the first
// word of its kernel_version string), or "".
func headerVersion(img []byte) string {
	if len(img) < 0x210 || string(img[0x202:0x206]) != "HdrS" || binary.LittleEndian.Uint16(img[0x206:]) < 0x0200 {
		return ""
	}
	off := int(binary.LittleEndian.Uint16(img[0x20e:]))
	if off == 0 {
		return ""
	}
	off += 0x200
	if off >= len(img) {
		return ""
	}
	s := img[off:min(off+256, len(img))]
	if i := bytes.IndexAny(s, " \x00"); i >= 0 {
		s = s[:i]
	}
	return string(s)
}
