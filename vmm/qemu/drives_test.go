package qemu

import (
	"slices"
	"strings"
	"testing"

	"github.com/nixos-fireactions/nixos-fireactions/vmm"
)

func TestDrivesAreVirtioBlockDevicesWithSerials(t *testing.T) {
	d := &Driver{Binary: "qemu-system-x86_64", Accel: AccelTCG}
	args := d.Args(vmm.Spec{
		ID: "vm1", Kernel: "/k", Initramfs: "/i", VCPUs: 1, MemoryMiB: 256, TAP: "fa1",
		Drives: []vmm.Drive{
			{ID: "fa-image", Path: "/store/images/sha256-x/root.img", ReadOnly: true},
			{ID: "fa-writable", Path: "/state/vms/a,b/disk.img"},
		},
	})
	line := strings.Join(args, " ")
	for _, want := range []string{
		"-drive id=fa-image,file=/store/images/sha256-x/root.img,format=raw,if=none,readonly=on -device virtio-blk-device,drive=fa-image,serial=fa-image",
		"-drive id=fa-writable,file=/state/vms/a,,b/disk.img,format=raw,if=none,cache=unsafe -device virtio-blk-device,drive=fa-writable,serial=fa-writable",
	} {
		if !strings.Contains(line, want) {
			t.Errorf("command line lacks %q:\n%s", want, line)
		}
	}
	if slices.Contains(args, "-drive") && strings.Index(line, "fa-image") > strings.Index(line, "fa-writable") {
		t.Error("drives out of order")
	}
}
