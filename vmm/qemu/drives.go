package qemu

import (
	"strings"

	"github.com/nixos-fireactions/nixos-fireactions/vmm"
)

// driveArgs attaches each drive as a virtio-blk device on the microvm's
// virtio-mmio bus, with its ID as the serial the guest finds it by. A
// read-only drive is read-only to QEMU too (shared by every VM of a pool);
// a writable one is the VM's scratch disk, whose flushes QEMU may skip
// (cache=unsafe): it is thrown away with the VM.
func driveArgs(drives []vmm.Drive) []string {
	var args []string
	for _, d := range drives {
		opts := "id=" + d.ID + ",file=" + escapeOpt(d.Path) + ",format=raw,if=none"
		if d.ReadOnly {
			opts += ",readonly=on"
		} else {
			opts += ",cache=unsafe"
		}
		args = append(args, "-drive", opts, "-device", "virtio-blk-device,drive="+d.ID+",serial="+d.ID)
	}
	return args
}

// escapeOpt escapes a QEMU option value: commas are doubled.
func escapeOpt(s string) string { return strings.ReplaceAll(s, ",", ",,") }
