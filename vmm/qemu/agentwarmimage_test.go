package qemu

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
	"github.com/nixos-fireactions/nixos-fireactions/initramfs"
	"github.com/nixos-fireactions/nixos-fireactions/vmm"
)

// TestTheRealAgentRestoresAnImageRootOnItsOwnDisk: the real agent boots
// as an image pool's template, with the pool's drives (an ext4 image
// holding the stub runner, a writable disk), and is saved while it waits
// for its identity. Two VMs are restored from it, each with its own
// writable disk under the same drive IDs and order, and handed an identity
// whose config names the image root. Each agent switches to the image
// under an overlay on its own disk and runs the runner there: each disk
// holds that VM's hostname and runner credential and not the other's,
// and the template's writable disk has no overlay directory at all (its
// agent never mounted it; the agent makes "upper" when it does).
func TestTheRealAgentRestoresAnImageRootOnItsOwnDisk(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	r := newWarmRig(t)
	pool, mods := realAgentPool(t, r.kernel, "virtio_blk", "overlay")
	r.archive = filepath.Join(t.TempDir(), "template.cpio")
	if err := initramfs.WriteVM(r.archive, pool, agentproto.Config{Template: true, Modules: mods}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	for _, d := range []string{"bin", "etc", "tmp"} {
		os.MkdirAll(filepath.Join(src, d), 0o755)
	}
	runner, err := os.ReadFile(buildGuest(t, "./testdata/stubrunner"))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(src, "bin", "stubrunner"), runner, 0o755)
	os.WriteFile(filepath.Join(src, "etc", "marker"), []byte("image-v1\n"), 0o644)
	image := filepath.Join(dir, "image.ext4")
	mkfs(t, image, "64M", "-d", src)
	before := fileSum(t, image)
	disks := map[string]string{}
	for _, name := range []string{"t", "x", "y"} {
		disks[name] = filepath.Join(dir, name+".img")
		mkfs(t, disks[name], "64M")
	}
	r.drives = func(name string) []vmm.Drive {
		return []vmm.Drive{{ID: "fa-image", Path: image, ReadOnly: true}, {ID: "fa-writable", Path: disks[name]}}
	}

	state, _ := r.agentTemplate(ctx)

	root := &agentproto.Root{Name: "test-image", FSType: "ext4",
		Image: agentproto.Disk{Serial: "fa-image", Device: "/dev/vda"}, Writable: agentproto.Disk{Serial: "fa-writable", Device: "/dev/vdb"}}
	vms := []*stubVM{
		{name: "x", hostIP: "169.254.202.1", guestIP: "169.254.202.2", mac: "02:00:00:00:04:0a"},
		{name: "y", hostIP: "169.254.202.5", guestIP: "169.254.202.6", mac: "02:00:00:00:04:0b"},
	}
	for _, v := range vms {
		r.restoreStub(ctx, v, state, root)
	}
	for _, v := range vms {
		c := v.waitEnd(t)
		if !strings.Contains(c, "root switched to the image") || !strings.Contains(c, "stubrunner: host=runner-"+v.name) {
			t.Errorf("%s did not run its runner on the image root; console:\n%s", v.name, c)
		}
	}
	for i, v := range vms {
		other := vms[1-i]
		disk := disks[v.name]
		if got := debugfsCat(t, disk, "/upper/home/runner/.runner"); !strings.Contains(got, v.cred) || strings.Contains(got, other.cred) {
			t.Errorf("%s's writable disk holds the credential %q; want its own %q", v.name, got, v.cred)
		}
		if got := strings.TrimSpace(debugfsCat(t, disk, "/upper/etc/hostname")); got != "runner-"+v.name {
			t.Errorf("%s's writable disk holds hostname %q", v.name, got)
		}
	}
	if got := debugfsLs(t, disks["t"], "/"); strings.Contains(got, "upper") {
		t.Errorf("the template's writable disk has an overlay directory: its agent mounted it before its identity:\n%s", got)
	}
	if got := debugfsLs(t, disks["x"], "/"); !strings.Contains(got, "upper") {
		t.Errorf("control: a restore's disk shows no overlay directory to the probe:\n%s", got)
	}
	if string(before) != string(fileSum(t, image)) {
		t.Error("the image drive changed")
	}
}
