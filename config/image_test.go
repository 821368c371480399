package config

import (
	"strings"
	"testing"
)

// Each case edits the minimal file into one mistake about images and
// checks the one problem reported names the field.
func TestImageSettingsAreChecked(t *testing.T) {
	const image = "      image: ghcr.io/acme/runner:v1\n"
	tests := []struct {
		name, old, new, field, want string
	}{
		{"both roots", "      root_initramfs: $DIR/root.cpio\n", "      root_initramfs: $DIR/root.cpio\n" + image,
			"vm.root_initramfs", "either root_initramfs or image, not both"},
		{"no root", "      root_initramfs: $DIR/root.cpio\n", "",
			"vm.root_initramfs", "must be set"},
		{"bad reference", "      root_initramfs: $DIR/root.cpio\n", "      image: \"UPPER/Case::x\"\n",
			"vm.image", "is not an image reference"},
		{"bad pull policy", "      root_initramfs: $DIR/root.cpio\n", image + "      pull_policy: always\n",
			"vm.pull_policy", `"always"`},
		{"tiny disk", "      root_initramfs: $DIR/root.cpio\n", image + "      disk_mib: 10\n",
			"vm.disk_mib", "10"},
		{"mirror with a path", "host_id:", "images: {mirrors: [{registry: docker.io, urls: [\"http://cache:5000/v2\"]}]}\nhost_id:",
			"images.mirrors[0].urls[0]", "only a scheme and a host"},
		{"mirror without URLs", "host_id:", "images: {mirrors: [{registry: docker.io}]}\nhost_id:",
			"images.mirrors[0].urls", "at least one mirror URL"},
		{"credential without password file", "host_id:", "images: {credentials: [{registry: ghcr.io, username: bot}]}\nhost_id:",
			"images.credentials[0].password_file", "must be set"},
		{"unknown file system", "host_id:", "images: {fs_type: squashfs}\nhost_id:",
			"images.fs_type", "squashfs"},
		{"no downloads at all", "host_id:", "images: {max_concurrent_downloads: 0}\nhost_id:",
			"images.max_concurrent_downloads", "0"},
		{"too many downloads", "host_id:", "images: {max_concurrent_downloads: 64}\nhost_id:",
			"images.max_concurrent_downloads", "64"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			_, err := f.parse(replace(t, minimalYAML, tt.old, tt.new))
			if err == nil {
				t.Fatalf("Parse succeeded; want an error naming %s", tt.field)
			}
			msg := err.Error()
			if strings.Contains(msg, "\n") || !strings.Contains(msg, tt.field+":") || !strings.Contains(msg, tt.want) {
				t.Fatalf("got:\n%s\nwant one line naming %s with %q", msg, tt.field, tt.want)
			}
		})
	}
}

func TestImagePoolParses(t *testing.T) {
	f := newFixture(t)
	cfg := f.mustParse(replace(t, minimalYAML, "      root_initramfs: $DIR/root.cpio\n",
		"      image: ghcr.io/acme/runner:v1\n      pull_policy: Always\n      disk_mib: 2048\n"))
	vm := cfg.Pools[0].VM
	if vm.Image != "ghcr.io/acme/runner:v1" || vm.PullPolicy != "Always" || vm.DiskMiB != 2048 || vm.RootInitramfs != "" {
		t.Fatalf("vm %+v", vm)
	}
	if cfg.Images.Dir != "/var/lib/fireactions/images" || cfg.Images.FSType != "erofs" {
		t.Fatalf("images %+v", cfg.Images)
	}
}
