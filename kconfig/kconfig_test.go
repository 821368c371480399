package kconfig

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
)

const testConfig = `# Linux/x86 6.12.8 Kernel Configuration
CONFIG_VIRTIO=y
CONFIG_VIRTIO_MMIO=y
CONFIG_VIRTIO_NET=y
CONFIG_VIRTIO_BLK=m
# CONFIG_EROFS_FS is not set
CONFIG_EXT4_FS=y
CONFIG_LOCALVERSION=""
`

var (
	mmio  = Driver{"CONFIG_VIRTIO_MMIO", "virtio_mmio"}
	blk   = Driver{"CONFIG_VIRTIO_BLK", "virtio_blk"}
	erofs = Driver{"CONFIG_EROFS_FS", "erofs"}
)

func gz(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	w.Write(b)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// withIKConfig is a stand-in for a vmlinux built with CONFIG_IKCONFIG:
// code, the gzipped configuration between its markers, more code.
func withIKConfig(t *testing.T, prefix string) []byte {
	t.Helper()
	b := append([]byte(prefix), bytes.Repeat([]byte{0x90}, 4096)...)
	b = append(b, ikcfgStart...)
	b = append(b, gz(t, []byte(testConfig))...)
	b = append(b, ikcfgEnd...)
	return append(b, bytes.Repeat([]byte{0xcc}, 4096)...)
}

// bzImage builds a bzImage the way the x86 boot protocol lays it out:
// setup sectors with the header, then the compressed payload, and the
// kernel release at kernel_version. As the kernel build does, the
// payload ends with the decompressed size (size_append).
func bzImage(payload []byte, release string) []byte {
	const setup = 3
	payload = binary.LittleEndian.AppendUint32(append([]byte(nil), payload...), 1<<20)
	img := make([]byte, (setup+1)*512)
	img[0x1f1] = setup
	copy(img[0x202:], "HdrS")
	binary.LittleEndian.PutUint16(img[0x206:], 0x020f)
	copy(img[0x400:], release+" (builder@example) #1 SMP\x00")
	binary.LittleEndian.PutUint16(img[0x20e:], 0x400-0x200)
	binary.LittleEndian.PutUint32(img[0x248:], 64)
	binary.LittleEndian.PutUint32(img[0x24c:], uint32(len(payload)))
	img = append(img, make([]byte, 64)...)
	return append(append(img, payload...), make([]byte, 100)...)
}

func write(t *testing.T, dir, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// A kernel built with CONFIG_IKCONFIG tells its drivers by itself, be it
// an ELF vmlinux or a bzImage with a gzip or zstd payload; a payload in a
// compression not read is said to be so, not taken for a driverless
// kernel.
func TestEmbeddedConfigurationIsRead(t *testing.T) {
	vmlinux := withIKConfig(t, "\x7fELF")
	zenc, _ := zstd.NewWriter(nil)
	images := map[string][]byte{
		"vmlinux":          vmlinux,
		"vmlinuz-gzip":     bzImage(gz(t, vmlinux), "6.12.8"),
		"vmlinuz-zstd":     bzImage(zenc.EncodeAll(vmlinux, nil), "6.12.8"),
		"vmlinuz-6.12.8-x": bzImage(gz(t, vmlinux), "6.12.8-x"),
	}
	dir := t.TempDir()
	for name, img := range images {
		k, err := Read(write(t, dir, name, img), filepath.Join(dir, "no-modules"), filepath.Join(dir, "no-boot"))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !strings.Contains(k.Source, "CONFIG_IKCONFIG") {
			t.Errorf("%s: configuration from %q, want the embedded one", name, k.Source)
		}
		for d, want := range map[Driver]State{mmio: BuiltIn, blk: Module, erofs: Missing} {
			if got := k.Has(d); got != want {
				t.Errorf("%s: %s is %s, want %s", name, d.Module, got, want)
			}
		}
	}
	lz4 := bzImage([]byte{0x02, 0x21, 0x4c, 0x18, 1, 2, 3}, "6.1.0")
	if _, err := Embedded(lz4); err == nil || !strings.Contains(err.Error(), "lz4") {
		t.Errorf("an lz4 payload: %v, want an error naming lz4", err)
	}
	if k, _ := Read(write(t, dir, "vmlinuz-6.12.8", bzImage(gz(t, []byte("no config")), "6.12.8")), "", dir); k.Version != "6.12.8" {
		t.Errorf("version %q, want the header's 6.12.8", k.Version)
	}
}

// Without an embedded configuration the config-<version> file beside the
// image, or in /boot, says; failing that, modules.builtin of its module
// tree; failing that, nothing is known and Source says what is missing.
func TestConfigurationBesideTheImageOrInTheModuleTree(t *testing.T) {
	plain := bzImage(gz(t, []byte("a kernel without IKCONFIG")), "6.12.8")

	beside := t.TempDir()
	kernel := write(t, beside, "vmlinuz", plain)
	write(t, beside, "config-6.12.8", []byte(testConfig))
	if k, _ := Read(kernel, "", t.TempDir()); k.Has(mmio) != BuiltIn || k.Has(blk) != Module || k.Source != filepath.Join(beside, "config-6.12.8") {
		t.Errorf("config beside the image: source %q, mmio %s, blk %s", k.Source, k.Has(mmio), k.Has(blk))
	}

	boot := t.TempDir()
	write(t, boot, "config-6.12.8", []byte(testConfig))
	if k, _ := Read(write(t, t.TempDir(), "vmlinuz", plain), "", boot); k.Has(erofs) != Missing || k.Source != filepath.Join(boot, "config-6.12.8") {
		t.Errorf("config in /boot: source %q, erofs %s", k.Source, k.Has(erofs))
	}

	mods := t.TempDir()
	write(t, mods, "modules.builtin", []byte("kernel/drivers/virtio/virtio_mmio.ko\nkernel/fs/ext4/ext4.ko\n"))
	write(t, mods, "modules.dep", []byte("kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko\n"))
	k, _ := Read(write(t, t.TempDir(), "vmlinuz", plain), mods, t.TempDir())
	if k.Has(mmio) != BuiltIn || k.Has(blk) != Module || k.Has(erofs) != Missing {
		t.Errorf("modules.builtin: mmio %s, blk %s, erofs %s", k.Has(mmio), k.Has(blk), k.Has(erofs))
	}

	k, _ = Read(write(t, t.TempDir(), "vmlinuz", plain), t.TempDir(), t.TempDir())
	if k.Has(mmio) != Unknown || !strings.Contains(k.Source, "CONFIG_IKCONFIG") || !strings.Contains(k.Source, "config-6.12.8") || !strings.Contains(k.Source, "modules.builtin") {
		t.Errorf("nothing to read: %s, source %q; want unknown, saying what was looked for", k.Has(mmio), k.Source)
	}
}

// Debian's cloud kernel, installed on this machine, has the virtio
// transport and network as modules, per its /boot/config-<version>.
func TestDebianCloudKernelHasVirtioAsModules(t *testing.T) {
	k, err := Read(debianKernel(t), "", "/boot")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(k.Source, "/boot/config-") || !strings.HasSuffix(k.Version, "-cloud-amd64") {
		t.Errorf("source %q, version %q", k.Source, k.Version)
	}
	net := Driver{"CONFIG_VIRTIO_NET", "virtio_net"}
	ext4 := Driver{"CONFIG_EXT4_FS", "ext4"}
	if k.Has(mmio) != Module || k.Has(net) != Module || k.Has(ext4) != BuiltIn {
		t.Errorf("virtio_mmio %s, virtio_net %s, ext4 %s; want modules and ext4 built in", k.Has(mmio), k.Has(net), k.Has(ext4))
	}
}

// debianKernel is the newest Debian cloud kernel in /boot.
func debianKernel(t *testing.T) string {
	t.Helper()
	ks, _ := filepath.Glob("/boot/vmlinuz-*-cloud-amd64")
	if len(ks) == 0 {
		t.Fatal("no Debian cloud kernel in /boot: install linux-image-cloud-amd64 (make deps)")
	}
	return ks[len(ks)-1]
}
