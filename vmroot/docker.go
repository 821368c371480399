package vmroot

import (
	"fmt"
	"path"
	"strings"

	"github.com/nixos-fireactions/nixos-fireactions/imagestore"
	"github.com/nixos-fireactions/nixos-fireactions/initramfs"
)

// dockerdDirs are where the agent looks for dockerd in a guest (its
// PATH), and dockerd for iptables.
var dockerdDirs = []string{"/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin"}

// CheckDocker looks into the flattened image for an executable dockerd
// where the agent looks for it, and for the iptables dockerd sets its
// bridge's rules with: a pool that asks for Docker (cache.docker) of an
// image without either is an error before any VM boots. It returns the
// image's iptables back end (initramfs.NFT or initramfs.Legacy; "" when
// the image has both and its iptables names neither), which decides the
// kernel modules its guests load.
func CheckDocker(im *imagestore.Image) (string, error) {
	ix, err := im.ReadIndex()
	if err != nil {
		return "", err
	}
	found := false
	for _, d := range dockerdDirs {
		if ix.Executable(d+"/dockerd") == nil {
			found = true
			break
		}
	}
	if !found {
		return "", fmt.Errorf("image %s (%s) has no dockerd in %v, but the pool asks for Docker (cache.docker): install Docker in the image or turn cache.docker off", im.Ref, im.Digest, dockerdDirs)
	}
	backend, ok := iptablesBackend(ix)
	if !ok {
		return "", fmt.Errorf("image %s (%s) has no iptables in %v (neither iptables-nft nor iptables-legacy), which dockerd needs for its bridge, but the pool asks for Docker (cache.docker): install iptables in the image or turn cache.docker off", im.Ref, im.Digest, dockerdDirs)
	}
	return backend, nil
}

// iptablesBackend is the back end of the iptables dockerd finds in the
// image: the first iptables on its PATH whose chain of symlinks names one
// (Debian's /usr/sbin/iptables -> /etc/alternatives/iptables ->
// /usr/sbin/iptables-nft -> xtables-nft-multi; Nix's bin/iptables ->
// xtables-nft-multi), else the one multi-call binary the image has. An
// image with both binaries (or neither) and an iptables that names
// neither gets "" (its guests load both back ends' modules). ok is false
// when dockerd would find no executable iptables (none, or a dangling
// alternative).
func iptablesBackend(ix imagestore.Index) (backend string, ok bool) {
	for _, d := range dockerdDirs {
		if ix.Executable(d+"/iptables") != nil {
			continue
		}
		if b := linkBackend(ix, d+"/iptables"); b != "" {
			return b, true
		}
		ok = true
	}
	has := func(name string) bool {
		for _, d := range dockerdDirs {
			if ix.Executable(d+"/"+name) == nil {
				return true
			}
		}
		return false
	}
	if !ok {
		return "", false
	}
	nft, legacy := has("xtables-nft-multi") || has("iptables-nft"), has("xtables-legacy-multi") || has("iptables-legacy")
	switch {
	case nft && !legacy:
		return initramfs.NFT, true
	case legacy && !nft:
		return initramfs.Legacy, true
	}
	return "", true
}

// linkBackend follows p's symlinks one at a time (at most 40) and returns
// the back end the first link target whose name says one points to.
func linkBackend(ix imagestore.Index, p string) string {
	for hops := 0; hops < 40; hops++ {
		dir, err := ix.Resolve(path.Dir(p))
		if err != nil || !dir.IsDir() {
			return ""
		}
		e, ok := ix[path.Join(dir.Path, path.Base(p))]
		if !ok || !e.IsSymlink() {
			return ""
		}
		switch name := path.Base(e.Link); {
		case strings.Contains(name, "nft"):
			return initramfs.NFT
		case strings.Contains(name, "legacy"):
			return initramfs.Legacy
		}
		if path.IsAbs(e.Link) {
			p = e.Link
		} else {
			p = path.Join(dir.Path, e.Link)
		}
	}
	return ""
}
