package firecrackerdouble

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestJailerContract: the jailer double takes the real jailer's
// arguments and refuses what the jailer refuses.
func TestJailerContract(t *testing.T) {
	dir := t.TempDir()
	fc := filepath.Join(dir, "firecracker")
	other := filepath.Join(dir, "vmm")
	os.WriteFile(fc, []byte("x"), 0o755)
	os.WriteFile(other, []byte("x"), 0o755)
	good := []string{"--id", "vm-1", "--exec-file", fc, "--uid", "123", "--gid", "100", "--chroot-base-dir", dir,
		"--cgroup-version", "2", "--parent-cgroup", "fa/vms", "--cgroup", "cpu.max=200000 100000", "--cgroup", "memory.max=1073741824",
		"--resource-limit", "no-file=1024", "--", "--api-sock", "/run/fc.sock"}
	p, err := parseArgs(good, jailerArgs, true)
	if err != nil {
		t.Fatal(err)
	}
	j, err := validateJailer(p)
	if err != nil {
		t.Fatal(err)
	}
	if j.chroot != filepath.Join(dir, "firecracker", "vm-1", "root") || j.uid != 123 || j.gid != 100 || j.noFile != 1024 ||
		len(j.cgroups) != 2 || j.cgroups[0] != [2]string{"cpu.max", "200000 100000"} || strings.Join(j.extra, " ") != "--api-sock /run/fc.sock" {
		t.Fatalf("parsed %+v", j)
	}

	replace := func(flag, value string) []string {
		out := append([]string(nil), good...)
		for i := range out {
			if out[i] == flag {
				out[i+1] = value
				return out
			}
		}
		t.Fatalf("no %s", flag)
		return nil
	}
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"missing uid", []string{"--id", "a", "--exec-file", fc, "--gid", "1"}, "missing argument: uid"},
		{"id with an underscore", replace("--id", "vm_1"), "invalid instance ID"},
		{"id too long", replace("--id", strings.Repeat("a", 65)), "invalid instance ID"},
		{"exec file not named firecracker", replace("--exec-file", other), `must contain "firecracker"`},
		{"exec file missing", replace("--exec-file", fc+"x"), "canonicalize"},
		{"chroot base missing", replace("--chroot-base-dir", dir+"/nope"), "canonicalize"},
		{"uid not a number", replace("--uid", "root"), "invalid uid"},
		{"parent cgroup with ..", replace("--parent-cgroup", "a/../b"), "parent cgroup path is invalid"},
		{"absolute parent cgroup", replace("--parent-cgroup", "/a"), "parent cgroup path is invalid"},
		{"cgroup version 3", replace("--cgroup-version", "3"), "invalid cgroup version"},
		{"cgroup without a value", replace("--cgroup", "cpu.max="), "invalid format for cgroups"},
		{"cgroup file without a controller", replace("--cgroup", "max=1"), "cgroup invalid file"},
		{"unknown resource", replace("--resource-limit", "cores=1"), "invalid resource argument"},
		{"unknown argument", append([]string{"--jail"}, good...), "wasn't expected"},
		{"duplicate argument", append([]string{"--uid", "1"}, good...), "more than once"},
	} {
		t.Run(c.name, func(t *testing.T) {
			p, err := parseArgs(c.args, jailerArgs, true)
			if err == nil {
				_, err = validateJailer(p)
			}
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want %q", err, c.want)
			}
		})
	}
}

// TestFirecrackerArguments: the firecracker double refuses arguments it
// does not know, so a new one in the driver cannot pass unnoticed.
func TestFirecrackerArguments(t *testing.T) {
	if _, err := parseArgs([]string{"--api-sock", "/s", "--id", "a"}, firecrackerArgs, false); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"--api-socket", "/s"}, {"--api-sock"}, {"--id", "a", "--id", "b"}, {"api-sock", "/s"}} {
		if _, err := parseArgs(args, firecrackerArgs, false); err == nil {
			t.Errorf("%q accepted", args)
		}
	}
}
