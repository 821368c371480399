package config

import (
	"errors"
	"net/url"
	"path/filepath"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
)

// Images is the store of OCI images that pools boot their guests from.
type Images struct {
	Dir string `yaml:"dir" doc:"Absolute directory of the image store: flattened images, one per digest, shared by all pools. Default: state_dir/images."`
	// MaxBytes caps the store; 0 is no cap.
	MaxBytes int64 `yaml:"max_bytes" doc:"Disk the store may take, in bytes; past it, the least recently used images no VM or pool uses are evicted (0: no cap)."`
	// MaxConcurrentDownloads bounds the layers of one image fetched at once.
	MaxConcurrentDownloads int    `yaml:"max_concurrent_downloads" doc:"Layers of one image downloaded at once (1-16); they are applied in order as they arrive, so a pull takes about its slowest downloads plus the flattening, not every layer's round trips one after another."`
	FSType                 string `yaml:"fs_type" doc:"What images are flattened into: erofs (smaller, and several times faster to build than ext4; the guest kernel needs erofs) or ext4."`
	// Refresh is how often pools with pull_policy Always resolve their
	// tag again.
	Refresh      time.Duration        `yaml:"refresh" doc:"How often pools with pull_policy Always resolve their image's tag again; a new digest is pulled and used by the VMs that start after it (at least 10s)."`
	DockerConfig string               `yaml:"docker_config" doc:"A Docker config.json whose auths (auth, or username and password) authenticate to registries; credential helpers are not run. Mode 600."`
	Credentials  []RegistryCredential `yaml:"credentials" doc:"Registry credentials; they win over docker_config's."`
	Mirrors      []RegistryMirror     `yaml:"mirrors" doc:"Pull-through caches, per registry: pulls try them in order, then the registry."`
}

// RegistryCredential authenticates to one registry or mirror.
type RegistryCredential struct {
	Registry     string `yaml:"registry" doc:"Required. Registry host[:port]; docker.io for Docker Hub."`
	Username     string `yaml:"username" doc:"Required."`
	PasswordFile string `yaml:"password_file" doc:"Required. File holding the password or token; mode 600, surrounding whitespace ignored."`
	// Password is read from PasswordFile by Load.
	Password string `yaml:"-"`
}

// RegistryMirror lists the pull-through caches of one registry.
type RegistryMirror struct {
	Registry string   `yaml:"registry" doc:"Required. Registry host[:port] whose images the mirrors serve; docker.io for Docker Hub."`
	URLs     []string `yaml:"urls" doc:"Required. Mirror base URLs (http or https, host and port only)."`
}

// imagesDefaults are the image store's defaults.
func imagesDefaults() Images {
	return Images{FSType: "erofs", Refresh: 5 * time.Minute, MaxConcurrentDownloads: 3}
}

// Defaults of an image pool's VMs.
const (
	defaultPullPolicy = "IfNotPresent"
	defaultDiskMiB    = 8192
)

// deriveImages fills the image store's directory from state_dir.
func deriveImages(c *Config) {
	if c.Images.Dir == "" && filepath.IsAbs(c.StateDir) {
		c.Images.Dir = filepath.Join(c.StateDir, "images")
	}
}

// images checks the image store section and reads its passwords.
func (v *validator) images(f field, im *Images) {
	v.check(
		rule{f.child("dir"), optional(im.Dir, absolute)}, // empty only when state_dir is wrong
		rule{f.child("max_bytes"), notNegative64(im.MaxBytes)},
		rule{f.child("max_concurrent_downloads"), between(im.MaxConcurrentDownloads, 1, 16)},
		rule{f.child("fs_type"), oneOf(im.FSType, "erofs", "ext4")},
		rule{f.child("refresh"), durationAtLeast(im.Refresh, 10*time.Second)},
		rule{f.child("docker_config"), optional(im.DockerConfig, v.secretFile)},
	)
	for i := range im.Credentials {
		c := &im.Credentials[i]
		cf := f.child("credentials").index(i)
		var err error
		if c.PasswordFile == "" {
			err = errMissing
		} else {
			c.Password, err = v.readTokenFile(c.PasswordFile)
		}
		v.check(
			rule{cf.child("registry"), required(c.Registry)},
			rule{cf.child("username"), required(c.Username)},
			rule{cf.child("password_file"), err},
		)
	}
	for i, m := range im.Mirrors {
		mf := f.child("mirrors").index(i)
		v.check(rule{mf.child("registry"), required(m.Registry)})
		if len(m.URLs) == 0 {
			v.check(rule{mf.child("urls"), errors.New("at least one mirror URL is required")})
		}
		for j, u := range m.URLs {
			v.check(rule{mf.child("urls").index(j), mirrorURL(u)})
		}
	}
}

// vmRoot checks where a pool's guest root comes from: exactly one of
// root_initramfs and image, and the image's settings.
func (v *validator) vmRoot(f field, vm *VMShape) {
	var initramfsErr, imageErr error
	switch {
	case vm.Image == "":
		initramfsErr = v.existingFile(vm.RootInitramfs)
	case vm.RootInitramfs != "":
		initramfsErr = errors.New("set either root_initramfs or image, not both")
	default:
		if _, err := name.ParseReference(vm.Image); err != nil {
			imageErr = errorf("%q is not an image reference: %v", vm.Image, err)
		}
	}
	v.check(
		rule{f.child("root_initramfs"), initramfsErr},
		rule{f.child("image"), imageErr},
		rule{f.child("pull_policy"), oneOf(vm.PullPolicy, "Always", "IfNotPresent", "Never")},
		rule{f.child("disk_mib"), inRange(vm.DiskMiB, 64, maxDiskMiB, "16 TiB")},
	)
}

// mirrorURL accepts a mirror's base URL: http or https, a host, no path.
func mirrorURL(s string) error {
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return errorf("%q is not a URL", s)
	case u.Scheme != "http" && u.Scheme != "https":
		return errorf("%q: the scheme must be http or https", s)
	case u.Host == "":
		return errorf("%q has no host", s)
	case u.Path != "" && u.Path != "/", u.RawQuery != "", u.User != nil:
		return errorf("%q: only a scheme and a host (and port) are allowed", s)
	}
	return nil
}

func notNegative64(n int64) error {
	if n < 0 {
		return errorf("%d is negative", n)
	}
	return nil
}
