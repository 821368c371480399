package qemu

import (
	"bytes"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// A restored guest runs the kernel its template booted, from the
// template's memory: QEMU reads -kernel on a restore only to lay out the
// same machine (the boot protocol's header decides its option ROM and
// firmware entries), then discards what it read (QEMU fills no ROM into
// a VM that is loading a migration stream). Reading the whole kernel,
// megabytes into fresh memory, was a third of a restore's QEMU start
// here; a restore gets the kernel's boot header alone instead, and no
// initramfs (the template unpacked it long ago).

// bootHeaderMagic is the Linux/x86 boot protocol's "HdrS" at
// bootHeaderMagicAt (Documentation/arch/x86/boot.rst).
const (
	bootHeaderMagicAt = 0x202
	setupSectsAt      = 0x1f1
)

var bootHeaderMagic = []byte("HdrS")

// bootHeader is what of kernel (a bzImage) QEMU needs to set a restore's
// machine up as its template's: the boot sector and the setup sectors
// (setup_sects, 4 when 0, plus one), as the file has them. A kernel
// without the boot protocol's header (an ELF vmlinux, PVH) gives nil:
// its restore reads the whole file, as a cold boot does.
func bootHeader(kernel string) ([]byte, error) {
	f, err := os.Open(kernel)
	if err != nil {
		return nil, fmt.Errorf("kernel boot header: %w", err)
	}
	defer f.Close()
	head := make([]byte, bootHeaderMagicAt+len(bootHeaderMagic))
	if _, err := io.ReadFull(f, head); err != nil {
		if err == io.ErrUnexpectedEOF || err == io.EOF {
			return nil, nil // too short to be a bzImage: QEMU decides
		}
		return nil, fmt.Errorf("kernel boot header of %s: %w", kernel, err)
	}
	if !bytes.Equal(head[bootHeaderMagicAt:], bootHeaderMagic) {
		return nil, nil
	}
	sects := int(head[setupSectsAt])
	if sects == 0 {
		sects = 4
	}
	b := make([]byte, (sects+1)*512)
	if _, err := f.ReadAt(b, 0); err != nil {
		return nil, fmt.Errorf("kernel boot header of %s: %d setup sectors: %w", kernel, sects, err)
	}
	return b, nil
}

// restoreKernel is the file a restore's QEMU gets as its kernel: a
// memory file holding kernel's boot header, or, for a kernel without
// one, the kernel itself.
func restoreKernel(kernel string) (*os.File, error) {
	h, err := bootHeader(kernel)
	if err != nil {
		return nil, err
	}
	if h == nil {
		f, err := os.Open(kernel)
		if err != nil {
			return nil, fmt.Errorf("open kernel: %w", err)
		}
		return f, nil
	}
	fd, err := unix.MemfdCreate("fireactions-kernel-header", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("kernel boot header: memfd: %w", err)
	}
	f := os.NewFile(uintptr(fd), "kernel-header")
	if _, err := f.Write(h); err != nil {
		f.Close()
		return nil, fmt.Errorf("kernel boot header: %w", err)
	}
	return f, nil
}
