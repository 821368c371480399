package initramfs

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// ModulesDir is where the boot archive puts kernel modules in the guest.
// It is under /etc/fireactions, not /lib/modules: on a merged-/usr root
// archive /lib is a symlink, and an archive entry for a /lib directory
// would replace that symlink and break every binary in the guest.
const ModulesDir = "/etc/fireactions/modules"

// Module is a kernel module file to load in the guest.
type Module struct {
	Name      string // canonical name, '-' spelt '_': "virtio_net"
	HostPath  string // the .ko file on the host
	GuestPath string // where the boot archive puts it: ModulesDir + "/NN-name.ko"
}

// GuestPaths returns the modules' guest paths, in order: the value for
// agentproto.Config.Modules.
func GuestPaths(mods []Module) []string {
	var paths []string
	for _, m := range mods {
		paths = append(paths, m.GuestPath)
	}
	return paths
}

// ResolveModules returns the named kernel modules with all their
// dependencies, from modulesDir/modules.dep (modulesDir is
// /lib/modules/<kernel release>), each once, dependencies before the
// modules that need them. '-' and '_' in names are the same. Modules built
// into the kernel (modules.builtin) are left out. Compressed modules are an
// error: the agent loads plain .ko files only.
func ResolveModules(modulesDir string, names []string) ([]Module, error) {
	deps, err := readModulesDep(modulesDir)
	if err != nil {
		return nil, err
	}
	builtin, err := readBuiltin(modulesDir)
	if err != nil {
		return nil, err
	}
	r := &resolver{dir: modulesDir, deps: deps, state: map[string]int{}}
	for _, n := range names {
		name := moduleName(n)
		if _, ok := deps[name]; !ok && builtin[name] {
			continue
		}
		if err := r.visit(name, nil); err != nil {
			return nil, err
		}
	}
	return r.out, nil
}

// depEntry is one line of modules.dep.
type depEntry struct {
	path string   // relative to the modules directory, or absolute
	deps []string // module names
}

type resolver struct {
	dir   string
	deps  map[string]depEntry
	state map[string]int // 1: being visited, 2: done
	out   []Module
}

// visit appends name after its dependencies. Dependencies are taken last
// first, the order modprobe loads them in.
func (r *resolver) visit(name string, chain []string) error {
	switch r.state[name] {
	case 2:
		return nil
	case 1:
		return fmt.Errorf("kernel modules depend on each other in a cycle: %s", strings.Join(append(chain, name), " -> "))
	}
	e, ok := r.deps[name]
	if !ok {
		if len(chain) > 0 {
			return fmt.Errorf("kernel module %s (needed by %s) is not in %s", name, chain[len(chain)-1], filepath.Join(r.dir, "modules.dep"))
		}
		return fmt.Errorf("unknown kernel module %s: not in %s", name, filepath.Join(r.dir, "modules.dep"))
	}
	if !strings.HasSuffix(e.path, ".ko") {
		return fmt.Errorf("kernel module %s is compressed (%s): only uncompressed .ko files are supported", name, path.Base(e.path))
	}
	r.state[name] = 1
	for i := len(e.deps) - 1; i >= 0; i-- {
		if err := r.visit(e.deps[i], append(chain, name)); err != nil {
			return err
		}
	}
	r.state[name] = 2
	host := e.path
	if !filepath.IsAbs(host) {
		host = filepath.Join(r.dir, host)
	}
	if _, err := os.Stat(host); err != nil {
		return fmt.Errorf("kernel module %s: %w", name, err)
	}
	r.out = append(r.out, Module{
		Name:      name,
		HostPath:  host,
		GuestPath: fmt.Sprintf("%s/%02d-%s.ko", ModulesDir, len(r.out)+1, name),
	})
	return nil
}

// readModulesDep parses "kernel/x/a.ko: kernel/y/b.ko kernel/z/c.ko" lines
// into entries by module name.
func readModulesDep(dir string) (map[string]depEntry, error) {
	p := filepath.Join(dir, "modules.dep")
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("reading kernel module dependencies: %w", err)
	}
	defer f.Close()
	deps := map[string]depEntry{}
	s := bufio.NewScanner(f)
	s.Buffer(nil, 1<<20)
	for line := 1; s.Scan(); line++ {
		text := strings.TrimSpace(s.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		mod, rest, ok := strings.Cut(text, ":")
		if !ok {
			return nil, fmt.Errorf("%s:%d: no ':' in %q", p, line, text)
		}
		e := depEntry{path: mod}
		for _, d := range strings.Fields(rest) {
			e.deps = append(e.deps, moduleName(d))
		}
		deps[moduleName(mod)] = e
	}
	if err := s.Err(); err != nil {
		return nil, fmt.Errorf("reading %s: %w", p, err)
	}
	return deps, nil
}

// readBuiltin returns the names in modules.builtin; none if it is absent.
func readBuiltin(dir string) (map[string]bool, error) {
	b, err := os.ReadFile(filepath.Join(dir, "modules.builtin"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading built-in kernel modules: %w", err)
	}
	builtin := map[string]bool{}
	for _, l := range strings.Fields(string(b)) {
		builtin[moduleName(l)] = true
	}
	return builtin, nil
}

// moduleName turns "kernel/drivers/net/virtio_net.ko.xz", "virtio-net" or
// "virtio_net.ko" into "virtio_net".
func moduleName(s string) string {
	base := path.Base(s)
	if i := strings.Index(base, ".ko"); i >= 0 && (len(base) == i+3 || base[i+3] == '.') {
		base = base[:i]
	}
	return strings.ReplaceAll(base, "-", "_")
}
