package vmroot

import (
	"path"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/nixos-fireactions/nixos-fireactions/imagestore"
	"github.com/nixos-fireactions/nixos-fireactions/initramfs"
)

// fakeRoot is a small image index: "name" an executable, "name -> target"
// a symlink, "name/" a directory; parents are added as directories.
func fakeRoot(entries ...string) imagestore.Index {
	ix := imagestore.Index{"/": {Path: "/", Mode: unix.S_IFDIR | 0o755}}
	var dir func(string)
	dir = func(p string) {
		if _, ok := ix[p]; ok || p == "/" {
			return
		}
		ix[p] = imagestore.IndexEntry{Path: p, Mode: unix.S_IFDIR | 0o755}
		dir(path.Dir(p))
	}
	for _, e := range entries {
		name, link, isLink := strings.Cut(e, " -> ")
		p := path.Clean("/" + name)
		dir(path.Dir(p))
		switch {
		case isLink:
			ix[p] = imagestore.IndexEntry{Path: p, Mode: unix.S_IFLNK | 0o777, Link: link}
		case strings.HasSuffix(name, "/"):
			dir(p)
		default:
			ix[p] = imagestore.IndexEntry{Path: p, Mode: unix.S_IFREG | 0o755}
		}
	}
	return ix
}

// The back end is read from the image as dockerd would find its
// iptables: Debian's alternatives either way (through a merged /usr's
// /sbin), Nix's store links, an Alpine-style image with one multi-call
// binary; an image with both and an iptables that names neither loads
// both; an image without iptables is not ok.
func TestIPTablesBackend(t *testing.T) {
	debian := func(alt string) []string {
		return []string{
			"usr/sbin/", "sbin -> usr/sbin", "etc/alternatives/",
			"usr/sbin/xtables-nft-multi", "usr/sbin/xtables-legacy-multi",
			"usr/sbin/iptables-nft -> xtables-nft-multi", "usr/sbin/iptables-legacy -> xtables-legacy-multi",
			"usr/sbin/iptables -> /etc/alternatives/iptables",
			"etc/alternatives/iptables -> /usr/sbin/" + alt,
		}
	}
	for _, c := range []struct {
		name   string
		root   []string
		want   string
		wantOK bool
	}{
		{"debian nft", debian("iptables-nft"), initramfs.NFT, true},
		{"debian legacy", debian("iptables-legacy"), initramfs.Legacy, true},
		{"nix", []string{"nix/store/abc-iptables-1.8.10/bin/xtables-nft-multi",
			"nix/store/abc-iptables-1.8.10/bin/iptables -> xtables-nft-multi",
			"bin -> nix/store/abc-iptables-1.8.10/bin"}, initramfs.NFT, true},
		{"alpine legacy", []string{"sbin/xtables-legacy-multi", "sbin/iptables -> xtables-legacy-multi"}, initramfs.Legacy, true},
		{"plain file, only nft's binary", []string{"usr/sbin/iptables", "usr/sbin/xtables-nft-multi"}, initramfs.NFT, true},
		{"both, iptables names neither", []string{"usr/sbin/iptables", "usr/sbin/xtables-nft-multi", "usr/sbin/xtables-legacy-multi"}, "", true},
		{"a dangling alternative", append(debian("iptables-nft")[:7], "usr/sbin/iptables -> /etc/alternatives/iptables"), "", false},
		{"none", []string{"usr/sbin/dockerd", "usr/sbin/xtables-nft-multi"}, "", false},
	} {
		got, ok := iptablesBackend(fakeRoot(c.root...))
		if got != c.want || ok != c.wantOK {
			t.Errorf("%s: %q, %v; want %q, %v", c.name, got, ok, c.want, c.wantOK)
		}
	}
	ix := fakeRoot("usr/sbin/iptables", "usr/sbin/xtables-legacy-multi")
	e := ix["/usr/sbin/iptables"]
	e.Mode = unix.S_IFREG | 0o644
	ix["/usr/sbin/iptables"] = e
	if got, ok := iptablesBackend(ix); ok {
		t.Errorf("an iptables no one may execute: %q, ok", got)
	}
	// A symlink loop ends, without a back end.
	if got := linkBackend(fakeRoot("usr/sbin/iptables -> a", "usr/sbin/a -> iptables"), "/usr/sbin/iptables"); got != "" {
		t.Errorf("a loop: %q", got)
	}
}
