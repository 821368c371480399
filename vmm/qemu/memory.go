package qemu

import (
	"context"
	"fmt"
	"os"
	"strconv"

	"github.com/nixos-fireactions/nixos-fireactions/vmm"
)

// Guest RAM in a file (vmm.Spec.MemoryFile). A template's RAM is a
// memory-backend-file mapped shared (share=on): the guest's memory is
// the file, and with the x-ignore-shared migration capability set,
// QEMU's migration skips shared RAM blocks (migration/ram.c,
// ramblock_is_ignored), so SaveState writes device state only. A
// restore maps the same file private (share=off, MAP_PRIVATE): its
// pages are the page cache's, shared by every restore of the template
// until the guest writes one, which then is the restore's own copy; the
// kernel never writes a private mapping back to its file. The restore
// sets x-ignore-shared too (the stream's RAM section then carries each
// block's address), before it loads the stream (-incoming defer, then
// migrate-incoming in Resume): its block is not shared, so QEMU loads
// whatever pages the stream has for it — none — and keeps the file's.
//
// QEMU 7.2 opens the file read-write even for a private mapping: its
// readonly=on maps the RAM read-only (PROT_READ, a ROM to the guest),
// which no guest runs in; the rom= property that opens the file
// read-only for a writable private mapping came with QEMU 8.2. What
// keeps a restore from writing the template is MAP_PRIVATE (a test
// hashes the file before and after a restore ran).

// memoryID is the memory backend's id: the RAM block's name in the
// migration stream, the same in a template and its restores.
const memoryID = "mem"

// memoryArgs are the memory backend of spec's RAM file, if it has one.
func memoryArgs(spec vmm.Spec) []string {
	if spec.MemoryFile == "" {
		return nil
	}
	share := "on"
	if spec.Restore != "" {
		share = "off"
	}
	return []string{"-object", "memory-backend-file,id=" + memoryID + ",mem-path=" + escapeOpt(spec.MemoryFile) +
		",size=" + strconv.Itoa(spec.MemoryMiB) + "M,share=" + share + ",merge=off"}
}

// prepareMemory checks a restore's RAM file, which must hold all of the
// guest's memory (QEMU would extend an empty one with zeros: a guest
// without its memory), and creates a template's, new and readable by
// the owner only (QEMU would create it world-readable).
func prepareMemory(spec vmm.Spec) error {
	if spec.MemoryFile == "" {
		return nil
	}
	want := int64(spec.MemoryMiB) << 20
	if spec.Restore != "" {
		st, err := os.Stat(spec.MemoryFile)
		if err != nil {
			return fmt.Errorf("template memory file: %w", err)
		}
		if st.Size() != want {
			return fmt.Errorf("template memory file %s is %d bytes, the VM's memory %d", spec.MemoryFile, st.Size(), want)
		}
		return nil
	}
	f, err := os.OpenFile(spec.MemoryFile, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("template memory file: %w", err)
	}
	return f.Close()
}

// ignoreShared sets QEMU's x-ignore-shared migration capability.
func ignoreShared(ctx context.Context, q *qmp) error {
	caps := map[string]any{"capabilities": []map[string]any{{"capability": "x-ignore-shared", "state": true}}}
	if _, err := q.do(ctx, "migrate-set-capabilities", caps); err != nil {
		return fmt.Errorf("set x-ignore-shared: %w", err)
	}
	return nil
}
