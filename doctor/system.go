package doctor

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/nixos-fireactions/nixos-fireactions/initramfs"
	"github.com/nixos-fireactions/nixos-fireactions/kconfig"
	"github.com/nixos-fireactions/nixos-fireactions/vmm/kvmprobe"
)

// System is the Host of the machine doctor runs on.
type System struct{}

var _ Host = System{}

// KVM implements Host with the real vCPU probe.
func (System) KVM(ctx context.Context) kvmprobe.Result {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return kvmprobe.Probe(ctx, "/dev/kvm")
}

// LookPath implements Host.
func (System) LookPath(name string) (string, error) { return exec.LookPath(name) }

// Version implements Host.
func (System) Version(ctx context.Context, binary string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, binary, "--version").CombinedOutput()
	first, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	if err != nil {
		return "", fmt.Errorf("%w: %s", err, first)
	}
	if first == "" {
		return "", errors.New("it printed nothing")
	}
	return first, nil
}

// Head implements Host.
func (System) Head(path string, n int) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b := make([]byte, n)
	m, err := io.ReadFull(f, b)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return b[:m], nil
}

// Size implements Host.
func (System) Size(path string) (int64, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

// existing is path or its nearest existing parent.
func existing(path string) string {
	for p := filepath.Clean(path); ; p = filepath.Dir(p) {
		if _, err := os.Stat(p); err == nil || p == filepath.Dir(p) {
			return p
		}
	}
}

// Writable implements Host.
func (System) Writable(dir string) error {
	f, err := os.CreateTemp(existing(dir), ".fireactions-doctor-*")
	if err != nil {
		return err
	}
	f.Close()
	return os.Remove(f.Name())
}

// Free implements Host.
func (System) Free(path string) (uint64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(existing(path), &st); err != nil {
		return 0, err
	}
	return st.Bavail * uint64(st.Bsize), nil
}

// SameFS implements Host.
func (System) SameFS(a, b string) (bool, error) {
	var sa, sb unix.Stat_t
	if err := unix.Stat(existing(a), &sa); err != nil {
		return false, err
	}
	if err := unix.Stat(existing(b), &sb); err != nil {
		return false, err
	}
	return sa.Dev == sb.Dev, nil
}

// MemAvailable implements Host from /proc/meminfo.
func (System) MemAvailable() (uint64, error) {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "MemAvailable:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("MemAvailable %q: %w", v, err)
			}
			return kb << 10, nil
		}
	}
	return 0, errors.New("no MemAvailable in /proc/meminfo")
}

// Links implements Host over netlink.
func (System) Links() (map[string]string, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, l := range links {
		out[l.Attrs().Name] = l.Type()
	}
	return out, nil
}

// Exists implements Host.
func (System) Exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// Cgroup2 implements Host from /proc/mounts, as the jailer finds it.
func (System) Cgroup2() (string, []string, error) {
	b, err := os.ReadFile("/proc/mounts")
	if err != nil {
		return "", nil, err
	}
	s := bufio.NewScanner(bytes.NewReader(b))
	for s.Scan() {
		f := strings.Fields(s.Text())
		if len(f) >= 3 && f[2] == "cgroup2" {
			ctrls, err := os.ReadFile(filepath.Join(f[1], "cgroup.controllers"))
			if err != nil {
				return f[1], nil, err
			}
			return f[1], strings.Fields(string(ctrls)), nil
		}
	}
	return "", nil, errors.New("no cgroup2 mount in /proc/mounts")
}

// KernelConfig implements Host with package kconfig; config-<version>
// files are looked for beside the image and in /boot.
func (System) KernelConfig(path, modulesDir string) (*kconfig.Kernel, error) {
	return kconfig.Read(path, modulesDir, "/boot")
}

// KernelModules implements Host as the boot archive resolves modules.
func (System) KernelModules(modulesDir string, names []string) ([]string, error) {
	mods, err := initramfs.ResolveModules(modulesDir, names)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(mods))
	for _, m := range mods {
		out = append(out, m.Name)
	}
	return out, nil
}
