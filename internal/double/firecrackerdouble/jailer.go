package firecrackerdouble

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// jailerArgs are the jailer's arguments. The ones the double does not
// model are refused, not ignored.
var jailerArgs = map[string]flagSpec{
	"id":              {value: true},
	"exec-file":       {value: true},
	"uid":             {value: true},
	"gid":             {value: true},
	"chroot-base-dir": {value: true},
	"cgroup-version":  {value: true},
	"cgroup":          {value: true, multi: true},
	"parent-cgroup":   {value: true},
	"resource-limit":  {value: true, multi: true},
	"netns":           {value: true},
	"daemonize":       {},
	"new-pid-ns":      {},
	"version":         {},
}

// jailed is a validated jailer invocation.
type jailed struct {
	id, execFile, chroot string // chroot: <base>/<exec name>/<id>/root
	uid, gid             int
	cgroupVersion        string
	parentCgroup         string
	cgroups              [][2]string // file, value
	noFile, fsize        uint64
	extra                []string
}

// RunJailer is the jailer double's main. On success it does not return:
// it execs the firecracker double.
func RunJailer(args []string, env Env) int {
	if err := runJailer(args, env); err != nil {
		fmt.Fprintln(env.Stderr, "firecrackerdouble jailer:", err)
		return 1
	}
	return 0
}

func runJailer(args []string, env Env) error {
	p, err := parseArgs(args, jailerArgs, true)
	if err != nil {
		return fmt.Errorf("arguments parsing error: %w", err)
	}
	if p.has("version") {
		spec, err := loadSpec(env)
		if err != nil {
			return err
		}
		fmt.Fprintf(env.Stdout, "Jailer v%s\n(fireactions test double)\n", spec.Version)
		return nil
	}
	for _, n := range []string{"netns", "daemonize", "new-pid-ns"} {
		if p.has(n) {
			return fmt.Errorf("--%s is not modelled by the test double", n)
		}
	}
	j, err := validateJailer(p)
	if err != nil {
		return err
	}
	if err := j.build(env); err != nil {
		return err
	}
	return j.exec(env)
}

func validateJailer(p parsedArgs) (*jailed, error) {
	j := &jailed{noFile: 2048, extra: p.extra, cgroupVersion: p.get("cgroup-version", "1")}
	for _, n := range []string{"id", "exec-file", "uid", "gid"} {
		if !p.has(n) {
			return nil, fmt.Errorf("arguments parsing error: missing argument: %s", n)
		}
	}
	j.id = p.get("id", "")
	if !instanceID.MatchString(j.id) {
		return nil, fmt.Errorf("invalid instance ID %q: alphanumeric characters and hyphens, at most 64", j.id)
	}
	exec, err := filepath.EvalSymlinks(p.get("exec-file", ""))
	if err != nil {
		return nil, fmt.Errorf("failed to canonicalize path %s: %w", p.get("exec-file", ""), err)
	}
	if exec, err = filepath.Abs(exec); err != nil {
		return nil, err
	}
	if fi, err := os.Stat(exec); err != nil || !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a file", exec)
	}
	if !strings.Contains(filepath.Base(exec), "firecracker") {
		return nil, fmt.Errorf("invalid filename: the filename of --exec-file must contain \"firecracker\": %s", filepath.Base(exec))
	}
	j.execFile = exec
	base, err := filepath.EvalSymlinks(p.get("chroot-base-dir", "/srv/jailer"))
	if err != nil {
		return nil, fmt.Errorf("failed to canonicalize path %s: %w", p.get("chroot-base-dir", "/srv/jailer"), err)
	}
	if fi, err := os.Stat(base); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("%s is not a directory", base)
	}
	j.chroot = filepath.Join(base, filepath.Base(exec), j.id, "root")
	if j.uid, err = parseID(p.get("uid", "")); err != nil {
		return nil, fmt.Errorf("invalid uid: %s", p.get("uid", ""))
	}
	if j.gid, err = parseID(p.get("gid", "")); err != nil {
		return nil, fmt.Errorf("invalid gid: %s", p.get("gid", ""))
	}
	j.parentCgroup = p.get("parent-cgroup", filepath.Base(exec))
	for _, c := range strings.Split(j.parentCgroup, "/") {
		if c == "" || c == "." || c == ".." {
			return nil, errors.New("parent cgroup path is invalid: it must not be absolute or contain '..' or '.'")
		}
	}
	if j.cgroupVersion != "1" && j.cgroupVersion != "2" {
		return nil, fmt.Errorf("%s is an invalid cgroup version specifier", j.cgroupVersion)
	}
	for _, c := range p.values["cgroup"] {
		parts := strings.Split(c, "=")
		if len(parts) != 2 || parts[1] == "" {
			return nil, fmt.Errorf("invalid format for cgroups: %s", c)
		}
		if len(strings.Split(parts[0], ".")) != 2 {
			return nil, fmt.Errorf("cgroup invalid file: %s", parts[0])
		}
		j.cgroups = append(j.cgroups, [2]string{parts[0], parts[1]})
	}
	if len(j.cgroups) > 0 && j.cgroupVersion != "2" {
		return nil, errors.New("cgroup v1 is not modelled by the test double")
	}
	for _, r := range p.values["resource-limit"] {
		name, value, ok := strings.Cut(r, "=")
		n, err := strconv.ParseUint(value, 10, 64)
		switch {
		case !ok:
			return nil, fmt.Errorf("invalid format for resources limits: %s", r)
		case err != nil:
			return nil, fmt.Errorf("invalid limit value for resource: %s: %w", value, err)
		case name == "no-file":
			j.noFile = n
		case name == "fsize":
			j.fsize = n
		default:
			return nil, fmt.Errorf("invalid resource argument: %s", name)
		}
	}
	return j, nil
}

func parseID(s string) (int, error) {
	n, err := strconv.ParseUint(s, 10, 32)
	return int(n), err
}

// build makes the jail as the jailer does, but does not pivot into it.
func (j *jailed) build(env Env) error {
	if err := os.MkdirAll(j.chroot, 0o755); err != nil {
		return fmt.Errorf("failed to create directory %s: %w", j.chroot, err)
	}
	name := filepath.Base(j.execFile)
	if err := copyExec(j.execFile, filepath.Join(j.chroot, name)); err != nil {
		return fmt.Errorf("failed to copy %s to %s: %w", j.execFile, j.chroot, err)
	}
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: j.noFile, Max: j.noFile}); err != nil {
		return fmt.Errorf("failed to set limit for resource no-file: %w", err)
	}
	if j.fsize > 0 {
		if err := unix.Setrlimit(unix.RLIMIT_FSIZE, &unix.Rlimit{Cur: j.fsize, Max: j.fsize}); err != nil {
			return fmt.Errorf("failed to set limit for resource fsize: %w", err)
		}
	}
	if len(j.cgroups) > 0 {
		if err := j.joinCgroup(env.setting("FCDOUBLE_PROC_MOUNTS", "/proc/mounts")); err != nil {
			return err
		}
	}
	for _, d := range []string{"", "dev", "dev/net", "run"} {
		p := filepath.Join(j.chroot, d)
		if err := os.MkdirAll(p, 0o700); err != nil {
			return fmt.Errorf("failed to create directory %s: %w", p, err)
		}
		if err := os.Chmod(p, 0o700); err != nil {
			return fmt.Errorf("failed to change permissions on %s: %w", p, err)
		}
		if err := os.Chown(p, j.uid, j.gid); err != nil {
			return fmt.Errorf("failed to change owner for %s: %w", p, err)
		}
	}
	for _, dev := range []struct {
		path         string
		major, minor uint32
	}{{"dev/net/tun", 10, 200}, {"dev/kvm", 10, 232}} {
		p := filepath.Join(j.chroot, dev.path)
		if err := unix.Mknod(p, unix.S_IFCHR|0o600, int(unix.Mkdev(dev.major, dev.minor))); err != nil {
			return fmt.Errorf("failed to create /%s via mknod inside the jail: %w", dev.path, err)
		}
		if err := os.Chown(p, j.uid, j.gid); err != nil {
			return fmt.Errorf("failed to change owner for %s: %w", p, err)
		}
	}
	return nil
}

func copyExec(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// joinCgroup finds the cgroup v2 hierarchy in the mount table, makes
// <mount>/<parent>/<id>, enables each controller in the parents' subtree
// control (where the file exists), writes the values and moves this
// process in.
func (j *jailed) joinCgroup(mounts string) error {
	mount, err := findCgroup2(mounts)
	if err != nil {
		return err
	}
	controllers, _ := os.ReadFile(filepath.Join(mount, "cgroup.controllers"))
	available := strings.Fields(string(controllers))
	dir := filepath.Join(mount, j.parentCgroup, j.id)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("failed to create directory %s: %w", dir, err)
	}
	for _, c := range j.cgroups {
		controller := strings.Split(c[0], ".")[0]
		if !contains(available, controller) {
			return fmt.Errorf("controller %s is unavailable", controller)
		}
		if err := enableSubtree(filepath.Dir(dir), controller); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, c[0]), []byte(c[1]+"\n"), 0o644); err != nil {
			return fmt.Errorf("failed to write to %s: %w", filepath.Join(dir, c[0]), err)
		}
	}
	procs := filepath.Join(dir, "cgroup.procs")
	if err := os.WriteFile(procs, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		return fmt.Errorf("failed to write to %s: %w", procs, err)
	}
	return nil
}

// enableSubtree writes +controller to dir's cgroup.subtree_control and to
// each parent's first, stopping where the file does not exist.
func enableSubtree(dir, controller string) error {
	f := filepath.Join(dir, "cgroup.subtree_control")
	if _, err := os.Stat(f); err != nil {
		return nil
	}
	if parent := filepath.Dir(dir); parent != dir {
		if err := enableSubtree(parent, controller); err != nil {
			return err
		}
	}
	if err := os.WriteFile(f, []byte("+"+controller+"\n"), 0o644); err != nil {
		return fmt.Errorf("failed to write to %s: %w", f, err)
	}
	return nil
}

func findCgroup2(mounts string) (string, error) {
	f, err := os.Open(mounts)
	if err != nil {
		return "", fmt.Errorf("failed to open file %s: %w", mounts, err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) >= 3 && fields[2] == "cgroup2" {
			return fields[1], nil
		}
	}
	return "", errors.New("hierarchy not found: no hierarchy found for this cgroup version")
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// exec drops to the jail's uid/gid and execs the copied firecracker with
// --id, as the jailer does, telling it the chroot it stands in.
func (j *jailed) exec(env Env) error {
	name := filepath.Base(j.execFile)
	var keep []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "FCDOUBLE_") && !strings.HasPrefix(kv, "FCDOUBLE_RECORD") && !strings.HasPrefix(kv, "FCDOUBLE_ROOT=") {
			keep = append(keep, kv)
		}
	}
	keep = append(keep, "FCDOUBLE_ROOT="+j.chroot)
	if env.Getenv("FCDOUBLE_QEMU") == "" {
		// The environment, PATH included, is cleared: say where QEMU is.
		if q, err := exec.LookPath("qemu-system-x86_64"); err == nil {
			keep = append(keep, "FCDOUBLE_QEMU="+q)
		}
	}
	if rec := env.Getenv("FCDOUBLE_RECORD"); rec != "" {
		// Opened while still root; the descriptor survives the exec.
		f, err := os.OpenFile(rec, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return fmt.Errorf("open the request record: %w", err)
		}
		if _, err := unix.FcntlInt(f.Fd(), unix.F_SETFD, 0); err != nil {
			return fmt.Errorf("keep the request record: %w", err)
		}
		keep = append(keep, "FCDOUBLE_RECORD_FD="+strconv.Itoa(int(f.Fd())))
	}
	if err := os.Chdir(j.chroot); err != nil {
		return fmt.Errorf("failed to chdir into chroot directory: %w", err)
	}
	if err := syscall.Setgroups(nil); err != nil {
		return fmt.Errorf("drop supplementary groups: %w", err)
	}
	if err := syscall.Setgid(j.gid); err != nil {
		return fmt.Errorf("set gid %d: %w", j.gid, err)
	}
	if err := syscall.Setuid(j.uid); err != nil {
		return fmt.Errorf("set uid %d: %w", j.uid, err)
	}
	now := strconv.FormatInt(time.Now().UnixMicro(), 10)
	argv := append([]string{"/" + name, "--id", j.id, "--start-time-us", now, "--start-time-cpu-us", "0"}, j.extra...)
	err := syscall.Exec(filepath.Join(j.chroot, name), argv, keep)
	return fmt.Errorf("failed to exec into Firecracker: %w", err)
}
