//go:build e2e

package e2e

import (
	"os"
	"path/filepath"
	"testing"
)

// capturingQEMU writes a QEMU wrapper for vmm.qemu.binary that copies
// each VM's initramfs to dir/<vm id>.cpio, then execs QEMU. A VM's
// initramfs leaves the state disk once its QEMU has it (QEMU gets it open
// as its fd 3, and it is emptied once the guest reports), so the tests
// that search what a guest can see read the wrapper's copy: the bytes
// QEMU booted.
func capturingQEMU(t *testing.T) (binary, dir string) {
	t.Helper()
	dir = t.TempDir()
	binary = filepath.Join(dir, "qemu-capture")
	script := `#!/bin/sh
id=
prev=
for a in "$@"; do
	if [ "$prev" = -name ]; then id=${a#fireactions-}; fi
	prev=$a
done
cp /dev/fd/3 "` + dir + `/$id.cpio.tmp" && mv "` + dir + `/$id.cpio.tmp" "` + dir + `/$id.cpio"
exec qemu-system-x86_64 "$@"
`
	if err := os.WriteFile(binary, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return binary, dir
}

// capturedInitramfs is VM id's initramfs as capturingQEMU copied it.
func capturedInitramfs(dir, id string) string { return filepath.Join(dir, id+".cpio") }
