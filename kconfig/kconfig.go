// Package kconfig tells, without booting it, what a guest kernel image was
// built with: whether a driver is built in, a module, or missing. It reads
// the kernel's configuration from the first of these that exists:
//
//   - the configuration the image embeds (CONFIG_IKCONFIG), from an ELF
//     vmlinux or from a bzImage whose payload is gzip, zstd or bzip2
//     compressed (other compressions are not read);
//   - a config-<version> file beside the image, or in /boot (Debian and
//     most distributions install one), the version coming from the
//     bzImage header or from the file name (vmlinuz-<version>);
//   - modules.builtin of the kernel's module tree, which lists the
//     drivers built in (anything else in modules.dep is a module).
//
// Without any of them a driver's state is Unknown.
package kconfig

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// State is how a kernel has a driver.
type State int

const (
	// Unknown: no configuration was found.
	Unknown State = iota
	// Missing: neither built in nor a module of this kernel.
	Missing
	// Module: a loadable module of this kernel, which the guest must load.
	Module
	// BuiltIn: in the kernel image, nothing to load.
	BuiltIn
)

func (s State) String() string {
	switch s {
	case Missing:
		return "missing"
	case Module:
		return "a module"
	case BuiltIn:
		return "built in"
	}
	return "unknown"
}

// Driver is a kernel feature by its configuration symbol and the name of
// its module.
type Driver struct {
	Symbol string // CONFIG_VIRTIO_MMIO
	Module string // virtio_mmio
}

// Kernel is what is known of a kernel image's configuration.
type Kernel struct {
	Path    string
	Version string // kernel release, "" when neither header nor name says
	// Source says where the configuration came from, or, for a kernel of
	// Unknown configuration, where it was looked for.
	Source string

	options map[string]string // CONFIG_X -> y or m; nil: no config file
	builtin map[string]bool   // modules.builtin; nil: not read
	modules map[string]bool   // modules.dep; nil: not read
}

// Read finds the configuration of the kernel image at path. modulesDir is
// its module tree (/lib/modules/<version>); "" means /lib/modules/<the
// image's version>. bootDir is where distributions put config-<version>
// (/boot). A kernel whose configuration cannot be found is no error: its
// drivers are Unknown and Source says where Read looked.
func Read(path, modulesDir, bootDir string) (*Kernel, error) {
	img, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading kernel image: %w", err)
	}
	k := &Kernel{Path: path, Version: headerVersion(img)}
	if k.Version == "" {
		k.Version = nameVersion(path)
	}
	if modulesDir == "" && k.Version != "" {
		modulesDir = filepath.Join("/lib/modules", k.Version)
	}
	var looked []string
	cfg, err := Embedded(img)
	switch {
	case err == nil:
		k.options, k.Source = parseConfig(cfg), "the configuration embedded in "+path+" (CONFIG_IKCONFIG)"
		return k, nil
	case errors.Is(err, ErrNoEmbeddedConfig):
		looked = append(looked, "no configuration embedded in "+filepath.Base(path)+" (CONFIG_IKCONFIG)")
	default:
		looked = append(looked, fmt.Sprintf("embedded configuration unreadable: %v", err))
	}
	if k.Version != "" {
		for _, dir := range []string{filepath.Dir(path), bootDir} {
			p := filepath.Join(dir, "config-"+k.Version)
			b, err := os.ReadFile(p)
			if err == nil {
				k.options, k.Source = parseConfig(b), p
				return k, nil
			}
			looked = append(looked, "no "+p)
		}
	} else {
		looked = append(looked, "no version in the image header or file name for a config-<version>")
	}
	if modulesDir != "" {
		p := filepath.Join(modulesDir, "modules.builtin")
		b, err := os.ReadFile(p)
		if err == nil {
			k.builtin, k.Source = moduleNames(b), p
			if dep, err := os.ReadFile(filepath.Join(modulesDir, "modules.dep")); err == nil {
				k.modules = moduleNames(dep)
			} else {
				k.modules = map[string]bool{}
			}
			return k, nil
		}
		looked = append(looked, "no "+p)
	}
	k.Source = strings.Join(looked, "; ")
	return k, nil
}

// Has says how the kernel has driver d.
func (k *Kernel) Has(d Driver) State {
	switch {
	case k.options != nil:
		switch k.options[d.Symbol] {
		case "y":
			return BuiltIn
		case "m":
			return Module
		}
		return Missing
	case k.builtin != nil:
		switch {
		case k.builtin[d.Module]:
			return BuiltIn
		case k.modules[d.Module]:
			return Module
		}
		return Missing
	}
	return Unknown
}

// parseConfig reads CONFIG_X=y and CONFIG_X=m lines; other values and
// "# CONFIG_X is not set" leave X out.
func parseConfig(b []byte) map[string]string {
	out := map[string]string{}
	s := bufio.NewScanner(bytes.NewReader(b))
	s.Buffer(nil, 1<<20)
	for s.Scan() {
		k, v, ok := strings.Cut(strings.TrimSpace(s.Text()), "=")
		if ok && strings.HasPrefix(k, "CONFIG_") && (v == "y" || v == "m") {
			out[k] = v
		}
	}
	return out
}

// moduleNames reads the module names of modules.builtin or modules.dep
// lines ("kernel/drivers/virtio/virtio_mmio.ko[: deps]"), '-' spelt '_'.
func moduleNames(b []byte) map[string]bool {
	out := map[string]bool{}
	for _, l := range strings.Split(string(b), "\n") {
		mod, _, _ := strings.Cut(strings.TrimSpace(l), ":")
		if mod == "" {
			continue
		}
		name := filepath.Base(mod)
		if i := strings.Index(name, ".ko"); i > 0 {
			name = name[:i]
		}
		out[strings.ReplaceAll(name, "-", "_")] = true
	}
	return out
}

// nameVersion is the version in a vmlinuz-<version> or vmlinux-<version>
// file name.
func nameVersion(path string) string {
	base := filepath.Base(path)
	for _, p := range []string{"vmlinuz-", "vmlinux-"} {
		if v, ok := strings.CutPrefix(base, p); ok {
			return v
		}
	}
	return ""
}

// Parse makes a Kernel of a configuration file's text, read from source.
func Parse(path, source string, config []byte) *Kernel {
	return &Kernel{Path: path, Source: source, options: parseConfig(config)}
}
